"""The file store: bytes under FLOWGATE_HOME/files (a shared volume when gateway and workers are apart),
metadata in Redis (`P file:ID` hash, `P files:OWNER` zset by sequence)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import msgspec

from workers.config import WorkerSettings
from workers.ledger import client, now, page_top


class StoredFile(msgspec.Struct, kw_only=True):
    id: str
    owner: str
    bytes: int
    created_at: int
    filename: str
    purpose: str
    expires_at: int | None = None


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


class FileStore:
    def __init__(self, settings: WorkerSettings, *, patient: bool = True):
        self.settings = settings
        self.r = client(settings, patient=patient)
        self.p = settings.prefix
        self.dir = settings.files_dir
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        if not file_id.startswith("file-") or not file_id[5:].replace("-", "").isalnum():
            raise FileNotFoundError(file_id)  # ids become path names: nothing else may reach the disk
        return self.dir / f"{file_id}.jsonl"

    def put(self, *, owner: str, filename: str, purpose: str, content: bytes, file_id: str | None = None) -> StoredFile:
        """Write the bytes (atomically: a temp name renamed into place), then publish the metadata."""
        file_id = file_id or new_file_id()
        target = self.path(file_id)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(content)
        os.replace(tmp, target)
        meta = StoredFile(id=file_id, owner=owner, bytes=len(content), created_at=now(), filename=filename,
                          purpose=purpose)
        seq = self.r.incr(f"{self.p}files:seq")
        with self.r.pipeline() as pipe:
            pipe.set(f"{self.p}file:{file_id}", msgspec.json.encode(meta))
            pipe.zadd(f"{self.p}files:{owner}", {file_id: seq})
            pipe.execute()
        return meta

    def get(self, file_id: str, owner: str) -> StoredFile | None:
        """The file's metadata if it exists and belongs to `owner` (someone else's file does not exist)."""
        raw = self.r.get(f"{self.p}file:{file_id}")
        if raw is None:
            return None
        meta = msgspec.json.decode(raw, type=StoredFile)
        return meta if meta.owner == owner else None

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def list(self, owner: str, *, after: str | None, limit: int, purpose: str | None = None) -> tuple[list, bool]:
        key = f"{self.p}files:{owner}"
        top = page_top(self.r, key, after)
        if top is None:
            return [], False
        found: list[StoredFile] = []
        for file_id in self.r.zrevrangebyscore(key, top, "-inf"):
            meta = self.get(file_id, owner)
            if meta is None or (purpose and meta.purpose != purpose):
                continue
            if len(found) == limit:
                return found, True
            found.append(meta)
        return found, False

    def delete(self, file_id: str, owner: str) -> bool:
        if self.get(file_id, owner) is None:
            return False
        with self.r.pipeline() as pipe:
            pipe.delete(f"{self.p}file:{file_id}")
            pipe.zrem(f"{self.p}files:{owner}", file_id)
            pipe.execute()
        self.path(file_id).unlink(missing_ok=True)
        return True
