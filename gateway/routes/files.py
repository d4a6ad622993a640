"""/v1/files: upload a batch input file (multipart, purpose=batch), list, read, download, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from litestar import Controller, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, MultipartBody, QueryParameter

from gateway.auth import Identity
from gateway.errors import ApiError
from gateway.routes.errors import ERROR_RESPONSES
from gateway.schemas.files import FileDeleted, FileList, FileObject
from workers.files import StoredFile
from workers.jobs import JobService

UPLOAD_LIMIT = 512 << 20  # the job's own byte limit is checked when a batch is created from the file


@dataclass
class FileUpload:
    file: UploadFile
    purpose: str


class FilesController(Controller):
    path = "/v1/files"
    tags = ("files",)

    @post(status_code=200, sync_to_thread=True, responses=ERROR_RESPONSES, request_max_body_size=UPLOAD_LIMIT,
          summary="Upload a file (purpose `batch`: JSONL in OpenAI's batch input format)")
    def upload(
        self, data: MultipartBody[FileUpload],
        identity: NamedDependency[Identity], jobs: NamedDependency[JobService],
    ) -> FileObject:
        if data.purpose != "batch":
            raise ApiError(400, f"purpose {data.purpose!r} is not supported here; use 'batch'.", param="purpose")
        content = data.file.file.read()
        if len(content) > jobs.settings.max_bytes:
            raise ApiError(413, f"Files may have at most {jobs.settings.max_bytes} bytes.", code="file_too_large")
        meta = jobs.files.put(owner=identity.key_id, filename=data.file.filename or "upload.jsonl",
                              purpose=data.purpose, content=content)
        return file_object(meta)

    @get(sync_to_thread=True, summary="List your files, newest first")
    def list_files(self, identity: NamedDependency[Identity], jobs: NamedDependency[JobService], purpose: FromQuery[str | None] = None,
                   after: FromQuery[str | None] = None, limit: Annotated[int, QueryParameter(ge=1, le=10000)] = 10000) -> FileList:
        found, more = jobs.files.list(identity.key_id, after=after, limit=limit, purpose=purpose)
        data = [file_object(meta) for meta in found]
        return FileList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                        has_more=more)

    @get("/{file_id:str}", sync_to_thread=True, summary="A file's metadata")
    def retrieve(self, file_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> FileObject:
        return file_object(_owned(jobs, file_id, identity))

    @get("/{file_id:str}/content", sync_to_thread=True, summary="A file's bytes")
    def content(self, file_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> Response[bytes]:
        _owned(jobs, file_id, identity)
        return Response(jobs.files.read(file_id), media_type="application/octet-stream")

    @delete("/{file_id:str}", status_code=200, sync_to_thread=True, summary="Delete a file")
    def remove(self, file_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> FileDeleted:
        if not jobs.files.delete(file_id, identity.key_id):
            raise _not_found(file_id)
        return FileDeleted(id=file_id, deleted=True)


def _owned(jobs: JobService, file_id: FromPath[str], identity: NamedDependency[Identity]) -> StoredFile:
    try:
        meta = jobs.files.get(file_id, identity.key_id)
    except FileNotFoundError:
        meta = None
    if meta is None:
        raise _not_found(file_id)
    return meta


def _not_found(file_id: FromPath[str]) -> ApiError:
    return ApiError(404, f"No file with id {file_id!r}.", code="not_found", param="file_id")


def file_object(meta: StoredFile) -> FileObject:
    return FileObject(id=meta.id, bytes=meta.bytes, created_at=meta.created_at, filename=meta.filename,
                      purpose=meta.purpose)
