"""logd's own logs: one key=value line per event on stderr, and a quiet logger
for attacker-driven events (logged once per reason, then only counted)."""

from __future__ import annotations

import logging
import sys
import time


class KeyValueFormatter(logging.Formatter):
    """`time=... level=info logger=logd.server.app msg="..."` (the message is key=value)."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"time={stamp}.{int(record.msecs):03d}Z level={record.levelname.lower()} "
            f"logger={record.name} {record.getMessage()}"
        )
        if record.exc_info:
            line += " exc=" + repr(self.formatException(record.exc_info))
        return line


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp logs each bad request at INFO/ERROR with its details: attacker-driven, too chatty.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)


class QuietLogger:
    """Logs the first occurrence of each reason at WARNING, then stays silent (the
    counters carry the rest): a flood of bad input must not become a flood of logs."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._seen: set[str] = set()

    def once(self, reason: str, fmt: str, *args: object) -> None:
        if reason not in self._seen:
            self._seen.add(reason)
            self._logger.warning("%s (further ones are only counted)", fmt % args)
