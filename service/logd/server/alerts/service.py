"""Alerts in the running server: the engine, the deliveries, the periodic check, and the
reload on SIGHUP (a refused reload keeps the old rules and says why in one sentence)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from logd.errors import ConfigError
from logd.server.alerts.engine import AlertEngine
from logd.server.alerts.notify import Notifier
from logd.server.alerts.rules import AlertConfig
from logd.server.config import read_alert_config
from logd.server.tasks import stop_tasks

log = logging.getLogger(__name__)

TICK_S = 1.0  # windows are counted in whole seconds


class Alerts:
    def __init__(self, config: AlertConfig, config_file: Path | None) -> None:
        self.notifier = Notifier()
        self.engine = AlertEngine(config, self.notifier.submit)
        self._config = config
        self._config_file = config_file
        self.reloads = 0
        self.reloads_refused = 0

    async def start(self) -> None:
        _check_sns_client(self._config)
        await self.notifier.update(self._config.targets)

    async def run(self) -> None:
        """The one periodic task: absent rules' deadlines, windows that empty with time."""
        while True:
            await asyncio.sleep(TICK_S)
            self.engine.tick()

    async def reload(self) -> None:
        """Read `alerts:` and `notify:` from the config file again (SIGHUP)."""
        if self._config_file is None:
            return
        try:
            config = read_alert_config(self._config_file)
            _check_sns_client(config)
        except ConfigError as err:
            self.reloads_refused += 1
            log.warning("alerts reload refused, the old rules stay: %s", err)
            return
        self._config = config
        self.engine.load(config)
        await self.notifier.update(config.targets)
        self.reloads += 1
        log.info("alerts reloaded rules=%d targets=%d", len(config.rules), len(config.targets))

    def info(self) -> dict[str, Any]:
        """What /info shows: counts only (no URL, no rule text)."""
        return {
            "rules": self.engine.rules,
            "firing": self.engine.firing,
            "notices": self.notifier.info(),
            "reloads": self.reloads,
            "reloads_refused": self.reloads_refused,
        }


def _check_sns_client(config: AlertConfig) -> None:
    """An SNS target needs boto3 (the aws extra): refused at start-up, not at each notice."""
    if config.uses_sns and importlib.util.find_spec("boto3") is None:
        name = next(t.name for t in config.targets.values() if t.sns_topic_arn)
        raise ConfigError(
            f"notify target {name!r} publishes to SNS, which needs boto3: "
            "pip install 'logd[server,aws]'"
        )


ALERTS = web.AppKey("alerts", Alerts)


async def alerts_ctx(app: web.Application) -> AsyncIterator[None]:
    alerts = app[ALERTS]
    await alerts.start()
    task = asyncio.get_running_loop().create_task(alerts.run(), name="logd-alerts")
    try:
        yield
    finally:
        await stop_tasks([task])
        await alerts.notifier.close()
