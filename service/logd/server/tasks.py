"""Background tasks that stop: in bounded time, and without losing a cancel.

A cancel alone does not always stop a task: redis-py shields its commands, and a
CancelledError that lands mid-command can be lost (on this machine, most cancels of a
task looping over pipelined commands were). A loop over the backend therefore also
checks a stop flag, and the wait for it is bounded here, so that a SIGTERM can never
leave logd hanging. On Python 3.11, asyncio.wait_for loses a cancel too, one that
arrives in the same turn as the wake-up it waits for; loops wait with `wait_event`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

STOP_S = 5.0  # a background loop's turn is at most a second or a backend timeout (2 s)


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until the event is set, at most `seconds`; whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], *, wait_s: float = STOP_S) -> None:
    """Cancel the tasks and wait for them, at most `wait_s` seconds; one still running
    then is logged by name and left to end with the event loop."""
    tasks = list(tasks)
    if not tasks:
        return
    for task in tasks:
        task.cancel()  # does nothing to a task that has ended
    _, pending = await asyncio.wait(tasks, timeout=wait_s)
    for task in tasks:
        if task in pending:
            frames = task.get_stack(limit=1)
            where = f"{frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else "?"
            log.error("task did not stop within %g s task=%s at=%s", wait_s, task.get_name(), where)
        elif not task.cancelled() and (err := task.exception()) is not None:
            log.error("task failed task=%s", task.get_name(), exc_info=err)
