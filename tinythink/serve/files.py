"""/v1/files: upload (multipart, streamed to disk under its own size limit), list, retrieve, content, delete."""

import os
from typing import Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse
from pydantic import BaseModel

from tinythink.batch.store import new_id
from tinythink.serve.errors import APIError, errors

PURPOSES = ("batch", "user_data")
ERRORS = errors({400: "a bad request (the message says why)", 404: "no such file",
                 413: "the file is over the server's file size limit"})


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


def page(items: list[dict], after: str | None, limit: int) -> dict:
    """OpenAI's cursor page: the items after the one with id `after`, at most `limit` of them."""
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise APIError(404, f"after: no object with id {after!r}", param="after", code="not_found")
        items = items[ids.index(after) + 1:]
    data = items[:limit]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": len(items) > limit}


router = APIRouter(prefix="/v1/files", tags=["files"])


def store(request: Request):
    return request.app.state.store


def existing(request: Request, file_id: str) -> dict:
    found = store(request).file(file_id)
    if found is None:
        raise APIError(404, f"no file with id {file_id!r}", param="file_id", code="file_not_found")
    return found


@router.post("", response_model=FileObject, responses=ERRORS, summary="upload a file (purpose batch or user_data)")
async def upload(request: Request, file: UploadFile = File(...),
                 purpose: str = Form(..., json_schema_extra={"enum": list(PURPOSES)})):
    if purpose not in PURPOSES:
        raise APIError(400, f"purpose must be one of {', '.join(PURPOSES)}; got {purpose!r}", param="purpose")
    s = store(request)
    file_id = new_id("file")
    partial = s.file_path(file_id).with_suffix(".partial")
    size = 0
    with partial.open("wb") as out:  # the upload is already spooled by the form parser; copy it in pieces
        while chunk := await file.read(1 << 20):
            out.write(chunk)
            size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    partial.rename(s.file_path(file_id))
    return s.add_file(file_id, file.filename or "upload", purpose, size)


@router.get("", response_model=FileList, responses=ERRORS, summary="list files, newest first")
async def list_files(request: Request, purpose: str | None = None, after: str | None = None,
                     limit: int = Query(10000, ge=1, le=10000), order: Literal["asc", "desc"] = "desc"):
    files = store(request).files(purpose)
    return page(files if order == "desc" else files[::-1], after, limit)


@router.get("/{file_id}", response_model=FileObject, responses=ERRORS, summary="a file's description")
async def retrieve(request: Request, file_id: str):
    return existing(request, file_id)


@router.get("/{file_id}/content", responses={**ERRORS, 200: {"content": {"application/octet-stream": {}},
                                                              "description": "the file's bytes"}},
            response_class=FileResponse, summary="a file's content")
async def content(request: Request, file_id: str):
    found = existing(request, file_id)
    return FileResponse(store(request).file_path(file_id), media_type="application/octet-stream",
                        filename=found["filename"])


@router.delete("/{file_id}", response_model=FileDeleted, responses=ERRORS, summary="delete a file")
async def delete(request: Request, file_id: str):
    existing(request, file_id)
    return {"id": file_id, "object": "file", "deleted": store(request).delete_file(file_id)}
