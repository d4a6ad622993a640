"""Fire-and-forget work after a response (giving back reservations, ledger writes)."""

from __future__ import annotations

import asyncio

_tasks: set[asyncio.Task] = set()


def spawn(coro) -> None:
    """Run `coro` in the background, holding a reference so the task is not collected mid-flight."""
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)
