"""/v1/batches: create, retrieve, cancel and list batch jobs over uploaded files (tinythink/batch/ runs them)."""

import time
from typing import Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from tinythink.batch.lines import ENDPOINTS, endpoint_error
from tinythink.batch.worker import new_batch
from tinythink.request_body import RequestBody
from tinythink.serve.errors import APIError, errors
from tinythink.serve.files import page

ERRORS = errors({400: "a bad request (the message says why)", 404: "no such batch or file",
                 409: "the batch has ended and cannot be cancelled"})
STATUS = Literal["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                 "cancelled"]


class BatchRequest(RequestBody):
    input_file_id: str = Field(description="an uploaded file (purpose batch): one request a line")
    endpoint: str = Field(description="/v1/chat/completions, /v1/completions or /v1/tasks/NAME",
                          json_schema_extra={"enum": list(ENDPOINTS)})  # endpoint_error says it in words
    completion_window: Literal["24h"] = Field("24h", description="lines not answered by then are not run")
    metadata: dict[str, str] | None = Field(None, max_length=16, description="up to 16 keys of your own")


class BatchError(BaseModel):
    code: str
    message: str
    param: str | None = None
    line: int | None = None


class BatchErrors(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchError]


class RequestCounts(BaseModel):
    total: int
    completed: int
    failed: int


class Batch(BaseModel):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: BatchErrors | None
    input_file_id: str
    completion_window: str
    status: STATUS
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: RequestCounts
    metadata: dict[str, str] | None


class BatchList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool


router = APIRouter(prefix="/v1/batches", tags=["batches"])


def existing(request: Request, batch_id: str) -> dict:
    found = request.app.state.store.batch(batch_id)
    if found is None:
        raise APIError(404, f"no batch with id {batch_id!r}", param="batch_id", code="batch_not_found")
    return found


@router.post("", response_model=Batch, responses=ERRORS, summary="run every line of an uploaded file")
async def create(body: BatchRequest, request: Request):
    store = request.app.state.store
    problem = endpoint_error(body.endpoint)
    if problem:
        raise APIError(400, problem, param="endpoint")
    found = store.file(body.input_file_id)
    if found is None:
        raise APIError(404, f"no file with id {body.input_file_id!r}", param="input_file_id",
                       code="file_not_found")
    if found["purpose"] != "batch":
        raise APIError(400, f"the input file's purpose is {found['purpose']!r}; upload it with purpose batch",
                       param="input_file_id")
    batch = new_batch(body.input_file_id, body.endpoint, body.completion_window, body.metadata)
    store.add_batch(batch)
    request.app.state.batch_worker.wake.set()
    return batch


@router.get("/{batch_id}", response_model=Batch, responses=ERRORS, summary="a batch's state and counts")
async def retrieve(request: Request, batch_id: str):
    return existing(request, batch_id)


@router.post("/{batch_id}/cancel", response_model=Batch, responses=ERRORS,
             summary="stop starting lines; the answers so far go to the output file")
async def cancel(request: Request, batch_id: str):
    batch = existing(request, batch_id)
    if batch["status"] in ("cancelling", "cancelled"):
        return batch
    if batch["status"] not in ("validating", "in_progress"):
        raise APIError(409, f"the batch is {batch['status']}: it cannot be cancelled", param="batch_id",
                       code="batch_not_cancellable")
    batch = request.app.state.store.update_batch(batch_id, status="cancelling", cancelling_at=int(time.time()))
    request.app.state.batch_worker.wake.set()
    return batch


@router.get("", response_model=BatchList, responses=ERRORS, summary="batches, newest first")
async def list_batches(request: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100)):
    return page(request.app.state.store.batches(), after, limit)
