"""Delivery of notices (alerts/notify.py) on a real event loop: a queue bounded under a
receiver that never answers, targets kept or replaced by a reload, and SNS through moto
(a topic with an SQS queue subscribed, the message read back)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from alerts_support import receiver
from logd.server.alerts.notice import Notice
from logd.server.alerts.notify import QUEUE_MAX, Notifier
from logd.server.alerts.rules import AlertConfig, Target
from logd.server.alerts.service import Alerts
from moto import mock_aws

REGION = "us-east-1"


def notice(rule: str = "r", targets: tuple[str, ...] = ("t",)) -> Notice:
    text = f"logd alert {rule} firing: 3 events in the last 1m (threshold 3)"
    return Notice(rule, "firing", targets, text, {"rule": rule, "state": "firing"})


async def until(check: Callable[[], Any], within_s: float = 10) -> Any:
    deadline = time.monotonic() + within_s
    while not (value := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return value


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())


def test_a_receiver_that_never_answers_holds_at_most_the_queue() -> None:
    with receiver() as hooks:

        async def main() -> None:
            notifier = Notifier(backoff_s=0.01)
            target = Target("stuck", webhook=hooks.url("/hang"), timeout_s=0.2, retries=0)
            await notifier.update({"stuck": target})
            started = time.monotonic()
            for i in range(1000):
                notifier.submit(notice(f"r{i}", ("stuck",)))
            assert time.monotonic() - started < 0.5  # submit never waits for delivery
            info = notifier.info()
            assert info["queued"] <= QUEUE_MAX
            assert info["dropped"] >= 1000 - QUEUE_MAX - 1  # one may be in flight
            await until(lambda: hooks.hung >= 2)  # a timed-out attempt; the next one goes
            await notifier.close()
            info = notifier.info()
            assert info["sent"] == 0
            assert info["dropped"] == 1000  # every notice accounted for: none was delivered

        run(main)


def test_a_notice_for_an_unknown_target_is_ignored_and_a_kept_target_keeps_its_counts() -> None:
    with receiver() as hooks:

        async def main() -> None:
            notifier = Notifier()
            ok = Target("ok", webhook=hooks.url("/ok"))
            await notifier.update({"ok": ok})
            notifier.submit(notice(targets=("ok", "gone")))
            await until(lambda: notifier.info()["sent"] == 1)
            await notifier.update({"ok": ok, "other": Target("other", webhook=hooks.url("/ok"))})
            assert notifier.info()["targets"]["ok"]["sent"] == 1  # unchanged: kept
            await notifier.update({})
            assert notifier.info()["sent"] == 1  # a removed target's counts stay in the total
            await notifier.close()
            (body,) = hooks.bodies("/ok")
            assert body["text"].startswith("logd alert r firing")
            assert body["logd"] == {"rule": "r", "state": "firing"}

        run(main)


def test_a_4xx_is_not_retried() -> None:
    async def main() -> None:
        from aiohttp import web

        app = web.Application()
        calls = []

        async def gone(request: web.Request) -> web.Response:
            calls.append(1)
            return web.Response(status=404)

        app.router.add_post("/hook", gone)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        notifier = Notifier(backoff_s=0.01)
        target = Target("t", webhook=f"http://127.0.0.1:{port}/hook", retries=3)
        await notifier.update({"t": target})
        notifier.submit(notice())
        await until(lambda: notifier.info()["dropped"] == 1)
        assert (calls, notifier.info()["retried"]) == ([1], 0)
        await notifier.close()
        await runner.cleanup()

    run(main)


@pytest.fixture
def sns_topic() -> Any:
    with mock_aws():
        sns = boto3.client("sns", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        arn = sns.create_topic(Name="logd-alerts")["TopicArn"]
        queue = sqs.create_queue(QueueName="alerts-inbox")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        yield arn, sqs, queue


def test_sns_publishes_the_notice(sns_topic: Any) -> None:
    arn, sqs, queue = sns_topic

    async def main() -> None:
        notifier = Notifier()
        await notifier.update({"page": Target("page", sns_topic_arn=arn)})
        notifier.submit(notice("prod-errors", ("page",)))
        await until(lambda: notifier.info()["sent"] == 1)
        assert notifier.info()["targets"]["page"]["kind"] == "sns"
        await notifier.close()

    run(main)
    (message,) = sqs.receive_message(QueueUrl=queue, WaitTimeSeconds=1)["Messages"]
    envelope = json.loads(message["Body"])
    assert envelope["Subject"] == "logd alert prod-errors firing"
    assert envelope["Message"].startswith("logd alert prod-errors firing: 3 events")
    assert envelope["MessageAttributes"]["rule"]["Value"] == "prod-errors"


def test_an_sns_topic_that_does_not_exist_is_dropped_and_logged_by_name(
    sns_topic: Any, caplog: pytest.LogCaptureFixture
) -> None:
    arn, _, _ = sns_topic
    missing = arn.replace("logd-alerts", "no-such-topic")

    async def main() -> None:
        notifier = Notifier(backoff_s=0.01)
        await notifier.update({"page": Target("page", sns_topic_arn=missing, retries=1)})
        notifier.submit(notice(targets=("page",)))
        await until(lambda: notifier.info()["dropped"] == 1)
        assert notifier.info()["retried"] == 1
        await notifier.close()

    run(main)
    (line,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "target=page" in line
    assert "reason=NotFound" in line


def test_a_url_the_client_refuses_is_dropped_without_its_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        notifier = Notifier(backoff_s=0.01)
        bad = Target("bad", webhook="http://[::1-very-secret-token/x", retries=0)
        await notifier.update({"bad": bad})
        notifier.submit(notice(targets=("bad",)))
        notifier.submit(notice(targets=("bad",)))  # the worker lives on after the first
        await until(lambda: notifier.info()["dropped"] == 2)
        await notifier.close()

    run(main)
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "target=bad" in logged
    assert "very-secret-token" not in logged


def test_reloads_in_a_row_leave_one_delivery_per_target(tmp_path: Path) -> None:
    path = tmp_path / "logdrc.yml"
    path.write_text('notify: {ops: {webhook: "http://127.0.0.1:9/a"}}\n')

    async def main() -> None:
        alerts = Alerts(AlertConfig(), path)
        await alerts.start()
        for i in range(5):  # a target that changes each time: closed and made again
            path.write_text(f'notify: {{ops: {{webhook: "http://127.0.0.1:9/{i}"}}}}\n')
            await asyncio.gather(*(alerts.reload() for _ in range(3)))
        assert alerts.reloads == 15
        assert list(alerts.notifier.info()["targets"]) == ["ops"]
        workers = [t for t in asyncio.all_tasks() if t.get_name().startswith("logd-notify-")]
        assert len(workers) == 1
        await alerts.notifier.close()

    run(main)
