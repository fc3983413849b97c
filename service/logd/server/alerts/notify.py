"""Delivery of notices: one bounded queue and one worker task per notify target.

`submit` never waits: a notice joins each of its targets' queues, or is dropped and
counted when that queue is full (QUEUE_MAX), so a receiver that never answers holds at
most QUEUE_MAX notices and delays nothing but its own queue. Each attempt has the
target's timeout; a failed one is retried `retries` times after an exponential backoff
with jitter; then the notice is dropped and counted. Webhooks are POSTed with aiohttp;
SNS is published with boto3 (imported only when a target needs it) in that target's own
thread, so the event loop never blocks on it.

A webhook URL holds a secret: log lines name the target and the reason (a status, an
exception's type), never the URL or an exception's text, which may hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp

from logd.server.alerts.notice import Notice
from logd.server.alerts.rules import Target
from logd.server.logsetup import QuietLogger

log = logging.getLogger(__name__)

QUEUE_MAX = 100  # notices waiting per target; a notice is a few KiB at most
BACKOFF_S, BACKOFF_MAX_S = 0.5, 30.0


@dataclass(slots=True)
class Counts:
    sent: int = 0
    retried: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "retried": self.retried, "dropped": self.dropped}


class Failed(Exception):
    """One attempt failed; `reason` is safe to log (no URL), `retry` whether to try again."""

    def __init__(self, reason: str, *, retry: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


class _Delivery:
    """One target: its queue, its worker, its counts."""

    def __init__(self, target: Target, notifier: Notifier) -> None:
        self.target = target
        self.counts = Counts()
        self._notifier = notifier
        self._queue: asyncio.Queue[Notice] = asyncio.Queue(QUEUE_MAX)
        self._sns: Any = None
        self._thread: ThreadPoolExecutor | None = None
        self._busy = False
        self._task = asyncio.get_running_loop().create_task(
            self._work(), name=f"logd-notify-{target.name}"
        )

    @property
    def queued(self) -> int:
        return self._queue.qsize()

    def offer(self, notice: Notice) -> None:
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.counts.dropped += 1
            self._notifier.quiet.once(
                f"full-{self.target.name}",
                "alert notice dropped: the queue is full target=%s rule=%s",
                self.target.name,
                notice.rule,
            )

    async def _work(self) -> None:
        while True:
            notice = await self._queue.get()
            self._busy = True  # counted once delivered or given up; close() counts it else
            try:
                await self._deliver(notice)
            finally:
                self._busy = False

    async def _deliver(self, notice: Notice) -> None:
        target = self.target
        for attempt in range(target.retries + 1):
            try:
                async with asyncio.timeout(target.timeout_s):
                    await self._attempt(notice)
            except TimeoutError:
                failure = Failed("timeout")
            except Failed as err:
                failure = err
            except Exception as err:  # a URL yarl refuses, a bug: never fatal to delivery
                failure = Failed(type(err).__name__)  # its text may hold the URL
            else:
                self.counts.sent += 1
                return
            if not failure.retry or attempt == target.retries:
                break
            self.counts.retried += 1
            delay = min(BACKOFF_MAX_S, self._notifier.backoff_s * 2**attempt)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter)
        self.counts.dropped += 1
        log.warning(
            "alert notice dropped target=%s rule=%s state=%s reason=%s attempts=%d",
            target.name,
            notice.rule,
            notice.state,
            failure.reason,
            attempt + 1,
        )

    async def _attempt(self, notice: Notice) -> None:
        if self.target.webhook is not None:
            await self._post(self.target.webhook, notice)
        else:
            await self._publish(notice)

    async def _post(self, url: str, notice: Notice) -> None:
        body = {"text": notice.text, "logd": notice.body}
        async with self._notifier.session().post(url, json=body, allow_redirects=False) as resp:
            if 200 <= resp.status < 300:
                return
            # A 4xx other than 429 will not change on a retry (a revoked hook, a bad body).
            retry = resp.status >= 500 or resp.status == 429
            raise Failed(f"status {resp.status}", retry=retry)

    async def _publish(self, notice: Notice) -> None:
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"logd-sns-{self.target.name}")
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._publish_blocking, notice)

    def _publish_blocking(self, notice: Notice) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if self._sns is None:
                self._sns = _sns_client(self.target)
            self._sns.publish(
                TopicArn=self.target.sns_topic_arn,
                Subject=f"logd alert {notice.rule} {notice.state}"[:100],
                Message=notice.text,
                MessageAttributes={
                    "rule": {"DataType": "String", "StringValue": notice.rule},
                    "state": {"DataType": "String", "StringValue": notice.state},
                },
            )
        except ClientError as err:
            raise Failed(err.response.get("Error", {}).get("Code", "ClientError")) from None
        except BotoCoreError as err:
            raise Failed(type(err).__name__) from None

    async def close(self) -> None:
        in_flight = self._busy
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.counts.dropped += self._queue.qsize() + in_flight
        if self._thread is not None:
            self._thread.shutdown(wait=False, cancel_futures=True)


def _sns_client(target: Target) -> Any:
    import boto3  # only a deployment with an SNS target needs it
    from botocore.config import Config

    # Attempts and their timeout are this module's: botocore retries nothing itself.
    timeout = target.timeout_s
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1})
    return boto3.client("sns", region_name=target.region, config=config)


class Notifier:
    """The deliveries of every target; start on the event loop, close when done."""

    def __init__(self, *, backoff_s: float = BACKOFF_S) -> None:
        self.backoff_s = backoff_s
        self.quiet = QuietLogger(log)
        self._deliveries: dict[str, _Delivery] = {}
        self._session: aiohttp.ClientSession | None = None
        self._gone = Counts()  # counts of targets a reload removed
        self._updating = asyncio.Lock()  # reloads in a row, or one during shutdown

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def update(self, targets: Mapping[str, Target]) -> None:
        """Deliver to these targets from now on: an unchanged one keeps its queue."""
        async with self._updating:
            await self._update(targets)

    async def _update(self, targets: Mapping[str, Target]) -> None:
        for name, delivery in list(self._deliveries.items()):
            if targets.get(name) != delivery.target:
                await delivery.close()
                for key, value in delivery.counts.as_dict().items():
                    setattr(self._gone, key, getattr(self._gone, key) + value)
                del self._deliveries[name]
        for name, target in targets.items():
            if name not in self._deliveries:
                self._deliveries[name] = _Delivery(target, self)

    def submit(self, notice: Notice) -> None:
        """Queue a notice for each of its targets; never waits."""
        for name in notice.targets:
            delivery = self._deliveries.get(name)
            if delivery is not None:
                delivery.offer(notice)

    async def close(self) -> None:
        await self.update({})
        if self._session is not None:
            await self._session.close()

    def info(self) -> dict[str, Any]:
        """Counts of notices: in all (targets a reload removed included), and per target."""
        total = Counts(self._gone.sent, self._gone.retried, self._gone.dropped)
        per_target = {}
        for name, delivery in self._deliveries.items():
            counts = delivery.counts
            total.sent += counts.sent
            total.retried += counts.retried
            total.dropped += counts.dropped
            per_target[name] = {
                "kind": delivery.target.kind,
                **counts.as_dict(),
                "queued": delivery.queued,
            }
        queued = sum(d.queued for d in self._deliveries.values())
        return {**total.as_dict(), "queued": queued, "targets": per_target}
