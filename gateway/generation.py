"""Running engine requests from an HTTP handler: ids, merged streams, and aborting when the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from litestar import Request

from engine.client import AsyncEngine
from engine.errors import InvalidRequest
from engine.protocol import GenerateRequest, RequestOutput, merge_outputs
from gateway.errors import ClientDisconnected
from gateway.telemetry import Observation

T = TypeVar("T")


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


@contextlib.contextmanager
def params_named(**names: str):
    """Report the engine's field names (prompt, max_tokens) as the endpoint's: chat says `messages`, the
    Responses API `input` and `max_output_tokens`."""
    try:
        yield
    except InvalidRequest as exc:
        exc.param = names.get(exc.param, exc.param)
        raise


async def until_disconnect(work: Awaitable[T], request: Request) -> T:
    """Await `work` unless the client disconnects first; then cancel it, which aborts its engine requests."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientDisconnected()
    finally:
        for pending in (task, watcher):
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending


async def _wait_for_disconnect(request: Request) -> None:
    # The body has been read by now, so the next ASGI message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def collect(engine: AsyncEngine, requests: list[GenerateRequest], obs: Observation | None = None
                  ) -> list[RequestOutput]:
    """Every request run to completion concurrently, each folded into one accumulated RequestOutput."""

    async def run(request: GenerateRequest) -> RequestOutput:
        acc = None
        stream = engine.generate(request)
        async for delta in stream if obs is None else obs.watch(stream):
            acc = merge_outputs(acc, delta)
        assert acc is not None and acc.finished
        return acc

    tasks = [asyncio.ensure_future(run(r)) for r in requests]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def merged(streams: list[AsyncIterator[RequestOutput]]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """(stream index, delta) as each stream produces them; closing this closes (and aborts) all of them."""
    if len(streams) == 1:
        async for delta in streams[0]:
            yield 0, delta
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for delta in stream:
                await queue.put((i, delta, None))
        except Exception as exc:
            await queue.put((i, None, exc))
        await queue.put((i, None, None))

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            i, delta, exc = await queue.get()
            if exc is not None:
                raise exc
            if delta is None:
                remaining -= 1
            else:
                yield i, delta
    finally:
        for task in tasks:
            task.cancel()


async def started(stream: AsyncIterator[T], request: Request) -> AsyncIterator[T]:
    """Wait for the stream's first item before the HTTP response starts, so that errors the engine reports
    up front (invalid request, context too long, overloaded) still become proper HTTP errors."""
    first = await until_disconnect(anext(stream), request)

    async def chained() -> AsyncIterator[T]:
        try:
            yield first
            async for item in stream:
                yield item
        finally:
            await stream.aclose()

    return chained()
