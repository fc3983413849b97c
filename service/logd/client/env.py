"""Where the clients (`logd.logger` and the `logd` commands) find the server and the secrets.

    LOGD_HOST          HTTP base URL for reads (default http://127.0.0.1:6101)
    LOGD_UDP_PORT      UDP port for writes, on LOGD_HOST's host (default 6102)
    LOGD_READ_SECRET   \
    LOGD_WRITE_SECRET  / else the dev-mode file that `logd serve` creates
    LOGD_ORIGIN        0 to leave out the host and pid of written events (default 1)
    LOGD_EXIT_TIMEOUT  seconds a process's exit waits for its loggers to send (default 2)

Standard library only: the logger must not pull in the server's dependencies.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from logd.devsecrets import SecretsFileError, dev_secrets_path, read_secrets_file
from logd.errors import ConfigError

DEFAULT_HTTP = "http://127.0.0.1:6101"
DEFAULT_UDP_PORT = 6102
DEFAULT_EXIT_TIMEOUT_S = 2.0
MAX_EXIT_TIMEOUT_S = 60.0


def http_base(value: str | None) -> str:
    """The read API's base URL from LOGD_HOST (or --host), without a trailing slash.
    A bare `host:port` means http://host:port."""
    text = (value or DEFAULT_HTTP).strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"LOGD_HOST must be an http(s) URL like http://10.0.1.5:6101 (got {value!r})"
        )
    try:
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"LOGD_HOST has a bad port (got {value!r})") from None
    return text.rstrip("/")


def udp_host(base: str) -> str:
    """Writes go to the host of the read URL."""
    return urlsplit(base).hostname or "127.0.0.1"


def udp_port(value: str | int | None) -> int:
    if value is None or value == "":
        return DEFAULT_UDP_PORT
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigError(f"LOGD_UDP_PORT must be a port number from 1 to 65535 (got {value!r})")
    return int(text)


def find_secret(name: str, environ: Mapping[str, str] = os.environ) -> tuple[str, str] | None:
    """(secret, where it came from) for LOGD_READ_SECRET or LOGD_WRITE_SECRET: the
    environment, else the dev-mode file; None when neither has it. `where` names a place,
    never a value."""
    value = environ.get(name)
    if value:
        return value, name
    path = dev_secrets_path(environ)
    if not path.exists():
        return None
    try:
        value = read_secrets_file(path).get(name)
    except SecretsFileError as err:
        raise ConfigError(str(err)) from None
    return (value, f"the dev-mode file {path}") if value else None


def missing_secret(name: str, environ: Mapping[str, str] = os.environ) -> str:
    """The sentence to show when no secret `name` can be found."""
    return (
        f"no {name.removeprefix('LOGD_').replace('_', ' ').lower()}: set {name}, or run "
        f"`logd serve` once on this machine to create the dev-mode file "
        f"{dev_secrets_path(environ)}"
    )


def origin(value: str | None) -> bool:
    """LOGD_ORIGIN: whether events carry the writer's host and pid (default yes)."""
    text = (value or "1").strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"LOGD_ORIGIN must be 1 or 0 (got {value!r})")


def exit_timeout(value: str | float | None, name: str = "LOGD_EXIT_TIMEOUT") -> float:
    """Seconds an exit waits for a logger's queued events: 0 to 60 (default 2)."""
    if value is None or value == "":
        return DEFAULT_EXIT_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= MAX_EXIT_TIMEOUT_S:  # also refuses nan
        raise ConfigError(
            f"{name} must be a number of seconds from 0 to {MAX_EXIT_TIMEOUT_S:g} (got {value!r})"
        )
    return seconds
