"""The async client every caller above the engine uses. Imports no torch: the model runs in its own process."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing as mp
import queue
import threading
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection

import msgspec

from engine.config import EngineConfig
from engine.core import run_engine_core
from engine.errors import EngineDead, EngineError, EngineOverloaded, InvalidRequest, error_from_code
from engine.messages import (
    AbortRequest,
    AddRequest,
    Outputs,
    Ready,
    Shutdown,
    StartupFailed,
    StatsQuery,
    StatsReply,
    decode_from_engine,
    encode,
)
from engine.protocol import EngineStats, GenerateRequest, ModelInfo, RequestOutput
from engine.tokenizer import Tokenizer

STARTUP_TIMEOUT_S = 600.0


class AsyncEngine:
    """`generate()` streams RequestOutput deltas; leaving the stream early aborts the request."""

    def __init__(self, process, inbox: Connection, outbox: Connection, model_info: ModelInfo, max_pending: int):
        self.process = process
        self.model_info = model_info
        self.tokenizer = Tokenizer.from_dir(model_info.path)
        self.max_pending = max_pending
        self._to_engine = inbox
        self._from_engine = outbox
        self._loop = asyncio.get_running_loop()
        self._streams: dict[str, asyncio.Queue] = {}
        self._stats_calls: dict[int, asyncio.Future] = {}
        self._call_ids = itertools.count()
        self._dead: EngineDead | None = None
        self._outgoing: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._read_loop, name="engine-reader", daemon=True).start()
        threading.Thread(target=self._write_loop, name="engine-writer", daemon=True).start()

    @classmethod
    async def start(cls, config: EngineConfig, max_pending: int = 4096) -> AsyncEngine:
        """Spawn the engine process (never fork: CUDA may be touched) and wait until its model is loaded."""
        ctx = mp.get_context("spawn")
        to_engine_r, to_engine_w = ctx.Pipe(duplex=False)
        from_engine_r, from_engine_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=run_engine_core, args=(config, to_engine_r, from_engine_w),
                              name="flowgate-engine", daemon=True)
        process.start()
        to_engine_r.close()
        from_engine_w.close()
        msg = await asyncio.get_running_loop().run_in_executor(None, _wait_ready, from_engine_r, process)
        if isinstance(msg, StartupFailed):
            process.join(timeout=5)
            raise EngineDead(f"engine failed to start: {msg.message}")
        return cls(process, to_engine_w, from_engine_r, msg.model_info, max_pending)

    def is_alive(self) -> bool:
        return self._dead is None and self.process.is_alive()

    @property
    def num_pending(self) -> int:
        return len(self._streams)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[RequestOutput]:
        if self._dead is not None:
            raise self._dead
        if len(self._streams) >= self.max_pending:
            raise EngineOverloaded(f"{len(self._streams)} requests in flight; try again later")
        if request.request_id in self._streams:
            raise EngineError(f"request id {request.request_id!r} is already in flight", param="request_id")
        self._send(AddRequest(request))  # before the stream exists: its outputs are dispatched on this loop, later
        stream: asyncio.Queue = asyncio.Queue()
        self._streams[request.request_id] = stream
        finished = False
        try:
            while not finished:
                item = await stream.get()
                if isinstance(item, EngineError):
                    finished = True
                    raise item
                if item.error_code is not None:
                    finished = True
                    raise error_from_code(item.error_code, item.error_message or "", item.error_param)
                finished = item.finished
                yield item
        finally:
            self._streams.pop(request.request_id, None)
            if not finished and self._dead is None:
                self._send(AbortRequest(request.request_id))

    async def abort(self, request_id: str) -> None:
        self._send(AbortRequest(request_id))

    async def stats(self) -> EngineStats:
        if self._dead is not None:
            raise self._dead
        call_id = next(self._call_ids)
        future = self._loop.create_future()
        self._stats_calls[call_id] = future
        self._send(StatsQuery(call_id))
        return await future

    async def shutdown(self) -> None:
        if self.process.is_alive():
            self._send(Shutdown())
            await self._loop.run_in_executor(None, self.process.join, 10)
        if self.process.is_alive():
            self.process.terminate()
        self._outgoing.put(None)

    def _send(self, msg) -> None:
        """Encoded here, on the caller's side: a message that cannot be encoded fails its caller, not the writer
        thread every later request depends on."""
        try:
            payload = encode(msg)
        except (msgspec.EncodeError, OverflowError, TypeError, ValueError) as exc:
            raise InvalidRequest(f"the request cannot be sent to the engine: {exc}") from None
        self._outgoing.put(payload)

    def _write_loop(self) -> None:
        while (payload := self._outgoing.get()) is not None:
            try:
                self._to_engine.send_bytes(payload)
            except (OSError, EOFError):
                return

    def _read_loop(self) -> None:
        while True:
            try:
                msg = decode_from_engine(self._from_engine.recv_bytes())
            except (OSError, EOFError):
                self._loop.call_soon_threadsafe(self._on_engine_dead)
                return
            self._loop.call_soon_threadsafe(self._dispatch, msg)

    def _dispatch(self, msg) -> None:
        match msg:
            case Outputs(outputs=outputs):
                for output in outputs:
                    stream = self._streams.get(output.request_id)
                    if stream is not None:
                        stream.put_nowait(output)
            case StatsReply(call_id=call_id, stats=stats):
                future = self._stats_calls.pop(call_id, None)
                if future is not None and not future.done():
                    future.set_result(stats)

    def _on_engine_dead(self) -> None:
        self._dead = EngineDead("the engine process has stopped")
        for stream in self._streams.values():
            stream.put_nowait(self._dead)
        for future in self._stats_calls.values():
            if not future.done():
                future.set_exception(self._dead)
        self._stats_calls.clear()


def _wait_ready(conn: Connection, process) -> Ready | StartupFailed:
    waited = 0.0
    while not conn.poll(1.0):
        waited += 1.0
        if not process.is_alive() or waited > STARTUP_TIMEOUT_S:
            return StartupFailed(f"engine process exited with code {process.exitcode}")
    try:
        return decode_from_engine(conn.recv_bytes())
    except (EOFError, OSError):
        return StartupFailed(f"engine process exited with code {process.exitcode}")
