"""stop_tasks: stopping background tasks ends in bounded time, even for a task that
loses its cancel (as redis-py can), and a task's failure is logged, not lost."""

from __future__ import annotations

import asyncio
import logging

import pytest
from logd.server.tasks import stop_tasks, wait_event


async def _forever() -> None:
    await asyncio.Event().wait()


def test_a_task_is_cancelled_and_awaited() -> None:
    async def main() -> bool:
        task = asyncio.create_task(_forever())
        await asyncio.sleep(0)
        await stop_tasks([task])
        return task.cancelled()  # here: asyncio.run cancels what is left once this returns

    assert asyncio.run(main())


def test_guard_against_a_task_that_loses_its_cancel(caplog: pytest.LogCaptureFixture) -> None:
    """The loop catches the cancel and goes on, as a loop over redis-py can; stop_tasks
    gives up after its wait, names the task, and the caller goes on."""
    turns = 0
    done = False

    async def deaf() -> None:
        nonlocal turns
        while not done:
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]
            turns += 1

    async def main() -> None:
        nonlocal done
        task = asyncio.create_task(deaf(), name="deaf-loop")
        await asyncio.sleep(0.02)
        await stop_tasks([task], wait_s=0.2)
        assert not task.done()
        turns_then = turns
        await asyncio.sleep(0.05)
        assert turns > turns_then  # it really was still running
        done = True
        await task

    with caplog.at_level(logging.ERROR, logger="logd.server.tasks"):
        asyncio.run(main())
    assert "task did not stop within 0.2 s task=deaf-loop" in caplog.text


def test_a_task_that_failed_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("the loop broke")

    async def main() -> None:
        task = asyncio.create_task(broken(), name="broken-loop")
        await asyncio.sleep(0)
        await stop_tasks([task, asyncio.create_task(_forever())])

    with caplog.at_level(logging.ERROR, logger="logd.server.tasks"):
        asyncio.run(main())
    assert "task failed task=broken-loop" in caplog.text
    assert "RuntimeError: the loop broke" in caplog.text


def test_no_tasks_is_nothing_to_do() -> None:
    asyncio.run(stop_tasks([]))


def test_wait_event_says_whether_the_event_came() -> None:
    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        timed_out = await wait_event(event, 0.01)
        asyncio.get_running_loop().call_later(0.01, event.set)
        return timed_out, await wait_event(event, 5)

    assert asyncio.run(main()) == (False, True)


def test_wait_event_keeps_a_cancel_that_comes_with_the_event() -> None:
    """asyncio.wait_for (3.11) returned the event here and lost the cancel."""

    async def main() -> bool:
        event = asyncio.Event()
        task = asyncio.create_task(wait_event(event, 3600))
        await asyncio.sleep(0.01)
        event.set()
        task.cancel()
        await asyncio.wait({task}, timeout=5)
        return task.cancelled()

    assert asyncio.run(main())
