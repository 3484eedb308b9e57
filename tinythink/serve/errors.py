"""Errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with the HTTP status."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from tinythink.serve.protocol import Strict


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


class ErrorBody(Strict):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(Strict):
    """Every error, in OpenAI's shape."""
    error: ErrorBody


def errors(described: dict[int, str]) -> dict:
    """A route's error responses for the OpenAPI document: each status with its meaning, in OpenAI's shape."""
    return {status: {"model": ErrorResponse, "description": description} for status, description in described.items()}


def error_response(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


def served(hosts: dict, model: str | None):
    """The host serving `model` (None: the first served), or a 404 naming the served models."""
    if model is None:
        return next(iter(hosts.values()))
    if model not in hosts:
        raise APIError(404, f"the model {model!r} does not exist (served: {', '.join(hosts)})", param="model",
                       code="model_not_found")
    return hosts[model]
