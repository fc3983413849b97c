"""Config: every setting of `logd serve`, and the only code that reads the environment.

Precedence: flag > environment (`LOGD_<NAME>`) > config file > default. The file
is `--config PATH`, else `LOGD_CONFIG`, else the first `logdrc.yml` found from
the working directory upwards. An unknown key or a bad value stops start-up
with one sentence naming the setting.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logd.errors import ConfigError
from logd.server.alerts.rules import (
    AlertConfig,
    Rule,
    Target,
    check_references,
    env_refused,
    parse_alert_config,
    parse_rules,
    parse_targets,
)
from logd.server.filters import FilterError, duration_ns
from logd.wire import HEADER_LEN, MAX_DATAGRAM

CONFIG_FILE_NAME = "logdrc.yml"
MiB = 1024 * 1024
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|kb|k|mib|mb|m|gib|gb|g)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": MiB,
    "mb": MiB,
    "mib": MiB,
    "g": 1024 * MiB,
    "gb": 1024 * MiB,
    "gib": 1024 * MiB,
}


def parse_size(text: str) -> int:
    """Bytes from `67108864`, `64MiB`, `512k` (binary units)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError("a size in bytes like 67108864, 64MiB or 512KiB")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "").lower()]


def parse_addr(text: str) -> tuple[str, int]:
    """`host:port` (`[::1]:6101` for IPv6) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("host:port, for example 127.0.0.1:6102")
    return host.strip("[]") or "0.0.0.0", int(port)


def _bounded(kind: Callable[[str], int | float], lo: float, hi: float) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"a number from {lo:g} to {hi:g}") from None
        if not lo <= value <= hi:
            raise ValueError(f"a number from {lo:g} to {hi:g}")
        return value

    return parse


def _size(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parse_size(text)
        if not lo <= value <= hi:
            raise ValueError(f"a size from {lo} to {hi} bytes")
        return value

    return parse


def _duration(lo_s: int, hi_s: int) -> Callable[[str], float]:
    """Seconds from a duration like `30s`, `15m`, `1.5h`, `7d` (filters.duration_ns)."""
    expected = f"a duration from {lo_s}s to {hi_s // 86400}d, like 30s, 15m or 7d"

    def parse(text: str) -> float:
        try:
            ns = duration_ns("", text)
        except FilterError:  # too many digits
            ns = None
        if ns is None or not lo_s * 10**9 <= ns <= hi_s * 10**9:
            raise ValueError(expected)
        return ns / 1e9

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError("one of " + ", ".join(options))
        return text.lower()

    return parse


def _text(text: str) -> str:
    return text


def _store_url(text: str) -> str:
    if text == "memory://" or re.match(r"^(redis|rediss)://[^/?#]+(/\d*)?$", text):
        return text
    if re.match(r"^(redis|rediss)\+cluster://[^/?#]+/?$", text):  # a cluster has only db 0
        return text
    raise ValueError(
        "memory://, redis://host:port/db, rediss://host:port/db, "
        "redis+cluster://host:port or rediss+cluster://host:port"
    )


def _file_only(text: str) -> Any:
    """A mapping has no one-line form: LOGD_RINGS is refused, not half-read."""
    raise ValueError("a `rings:` mapping in logdrc.yml (per-ring sizes are set in the file only)")


def _setting(
    default: Any, help: str, parse: Callable[[str], Any], *, flag: bool = True, secret: bool = False
) -> Any:
    """A Config field: how to parse it from text, its help, and whether it has a flag."""
    metadata = {"help": help, "parse": parse, "flag": flag, "secret": secret}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Config:
    """Settings of `logd serve`; each has a flag (`--udp-addr`), an env var (`LOGD_UDP_ADDR`)
    and a config-file key (`udp_addr`), except secrets, which have no flag."""

    udp_addr: tuple[str, int] = _setting(
        ("0.0.0.0", 6102), "UDP host:port that receives signed frames.", parse_addr
    )
    http_addr: tuple[str, int] = _setting(
        ("0.0.0.0", 6101), "HTTP host:port that serves reads.", parse_addr
    )
    udp_rcvbuf: int = _setting(
        8 * MiB,
        "UDP receive buffer to ask the kernel for (capped by net.core.rmem_max).",
        _size(4096, 1024 * MiB),
    )
    max_frame: int = _setting(
        MAX_DATAGRAM, "Largest datagram accepted, in bytes.", _size(HEADER_LEN, MAX_DATAGRAM)
    )
    max_age: float = _setting(
        1.0, "Seconds a frame stays valid after signing (older: stale).", _bounded(float, 0.01, 300)
    )
    max_future: float = _setting(
        0.25, "Seconds a frame may be signed ahead of the server clock.", _bounded(float, 0, 60)
    )
    replay_capacity: int = _setting(
        500_000,
        "Most MACs the replay guard remembers; beyond it frames are refused.",
        _bounded(int, 1, 100_000_000),
    )
    memory_limit: int | None = _setting(
        None,
        "Bytes the whole server may use (rings, tails, queries, replay guard, fixed part); "
        "unset: 70% of the cgroup's memory.max, else of MemTotal.",
        _size(16 * MiB, 1 << 50),
    )
    ring_bytes: int | None = _setting(
        None,
        "Default byte budget of each env/svc ring; unset: the largest up to 64MiB that fits "
        "the memory limit with every ring in use.",
        _size(MiB, 1024 * 1024 * MiB),
    )
    rings: Mapping[str, int] = _setting(
        {},
        "Per-ring budgets (file only): `env/svc: 256MiB`, or a prefix `prod/*: 8MiB`; "
        "`{bytes: 256MiB, max_age: 7d}` sets a max age too.",
        _file_only,
        flag=False,
    )
    # Retention by age only frees memory sooner: budget.py plans for every ring full, so
    # neither this nor a ring's max_age changes the memory budget.
    ring_max_age: float | None = _setting(
        None,
        "Default max age of each ring (30s, 15m, 7d): older events are evicted chunk by "
        "chunk; unset: kept until the byte budget needs the room. Memory store only.",
        _duration(1, 3650 * 86400),
    )
    max_rings: int = _setting(
        1024,
        "Most rings; events for further env/svc keys go to one overflow ring.",
        _bounded(int, 1, 1_000_000),
    )
    data_dir: Path | None = _setting(
        None, "Directory that keeps the rings across restarts; unset: memory only.", Path
    )
    flush_interval: float = _setting(
        1.0,
        "Seconds between background writes + fsync to --data-dir (a crash loses at most this).",
        _bounded(float, 0.01, 3600),
    )
    store_url: str = _setting(
        "memory://",
        "Where rings live: memory:// (this process) or redis://host:port/db, rediss://... "
        "(Valkey/Redis shared by several logd nodes); redis+cluster://host:port, "
        "rediss+cluster://... for a cluster-mode one (any node as seed).",
        _store_url,
    )
    store_password: str | None = _setting(
        None, "Valkey/Redis AUTH password or token (env only).", _text, flag=False, secret=True
    )
    store_buffer: int = _setting(
        200_000,
        "Events held locally while the Valkey/Redis store is slow or down; beyond: new frames"
        " refused while it is slow, the oldest events dropped while it is down.",
        _bounded(int, 1, 100_000_000),
    )
    query_limit_max: int = _setting(
        10_000, "Largest `limit` a query may ask for.", _bounded(int, 1, 1_000_000)
    )
    query_max_bytes: int = _setting(
        8 * MiB,
        "Bytes of events one query answer may hold; past it the answer ends with a "
        "truncation marker.",
        _size(64 * 1024, 1024 * MiB),
    )
    max_queries: int = _setting(
        4, "Queries answered at once; more get a 429.", _bounded(int, 1, 1000)
    )
    max_tails: int = _setting(64, "Most concurrent /tail subscribers.", _bounded(int, 0, 100_000))
    tail_queue: int = _setting(
        4096,
        "Events queued per tail subscriber before it starts losing them.",
        _bounded(int, 1, 1_000_000),
    )
    tail_buffer_bytes: int = _setting(
        MiB,
        "Bytes queued per tail subscriber before it starts losing events.",
        _size(4096, 1024 * MiB),
    )
    auth_fail_limit: int = _setting(
        10,
        "Failed read authentications per client address per minute before 429.",
        _bounded(int, 1, 1_000_000),
    )
    # Alerts (file only, re-read on SIGHUP): rules over arriving events, and where notices go.
    alerts: tuple[Rule, ...] = field(
        default=(),
        metadata={
            "help": "Alert rules (file only): a list of {name, filter, over, threshold, ...}.",
            "parse": env_refused,
            "parse_file": parse_rules,
            "flag": False,
            "secret": False,
        },
    )
    notify: Mapping[str, Target] = field(
        default_factory=dict,
        repr=False,
        metadata={
            "help": "Alert targets (file only): NAME: {webhook: URL} or {sns_topic_arn: ARN}.",
            "parse": env_refused,
            "parse_file": parse_targets,
            "flag": False,
            "secret": False,
        },
    )
    read_secret: str | None = _setting(
        None,
        "Read secret (env only). With the write secret unset too: dev mode.",
        _text,
        flag=False,
        secret=True,
    )
    write_secret: str | None = _setting(
        None, "Write secret (env only).", _text, flag=False, secret=True
    )
    secrets_file: Path | None = _setting(
        None, "File of LOGD_READ_SECRET=/LOGD_WRITE_SECRET= lines, re-read on SIGHUP.", Path
    )
    read_secret_id: str | None = _setting(
        None, "Secrets Manager name or ARN of the read secret (needs boto3).", _text
    )
    write_secret_id: str | None = _setting(
        None, "Secrets Manager name or ARN of the write secret (needs boto3).", _text
    )
    secrets_reload_interval: float = _setting(
        30.0,
        "Seconds between Secrets Manager reloads (also on SIGHUP and unknown key_ids).",
        _bounded(float, 0.1, 86_400),
    )
    secrets_previous_grace: float = _setting(
        900.0,
        "Seconds an AWSPREVIOUS secret stays accepted after logd first sees it become previous.",
        _bounded(float, 0, 30 * 86_400),
    )
    http_idle_timeout: float = _setting(
        10.0,
        "Seconds an HTTP connection may sit without a request in progress (slow headers, idle "
        "keep-alive) before it is closed.",
        _bounded(float, 0.1, 3600),
    )
    cors_origin: str | None = _setting(
        None, "Origin allowed to read from a browser (Access-Control-Allow-Origin).", _text
    )
    tls_cert: Path | None = _setting(None, "PEM certificate: serve HTTPS.", Path)
    tls_key: Path | None = _setting(None, "PEM private key for --tls-cert.", Path)
    log_level: str = _setting(
        "info",
        "Own log level: debug, info, warning, error.",
        _choice("debug", "info", "warning", "error"),
    )
    config_file: Path | None = field(default=None, metadata={"flag": False, "internal": True})
    # The max_age of `rings:` entries, in seconds (read with `rings`).
    ring_max_ages: Mapping[str, float] = field(
        default_factory=dict, metadata={"flag": False, "internal": True}
    )

    @property
    def max_age_ns(self) -> int:
        """The freshness window of PROTOCOL.md, in the nanoseconds the checks use."""
        return int(self.max_age * 1e9)

    @property
    def max_future_ns(self) -> int:
        return int(self.max_future * 1e9)

    @property
    def ring_max_age_ns(self) -> int:
        """The default max age of a ring in ns; 0: none."""
        return round(self.ring_max_age * 1e9) if self.ring_max_age else 0

    @property
    def ring_max_ages_ns(self) -> dict[str, int]:
        return {key: round(age * 1e9) for key, age in self.ring_max_ages.items()}

    @classmethod
    def settings(cls) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]

    @classmethod
    def load(
        cls,
        *,
        file: Path | None,
        environ: Mapping[str, str],
        argv: Mapping[str, str],
        cwd: Path | None = None,
    ) -> Config:
        """Merge default < file < env < flags; `argv` holds only the flags given."""
        path = file or (Path(environ["LOGD_CONFIG"]) if environ.get("LOGD_CONFIG") else None)
        path = path or find_config_file(cwd or Path.cwd())
        values: dict[str, Any] = {"config_file": path}
        file_values = _read_file(path) if path else {}
        for f in cls.settings():
            env_name = "LOGD_" + f.name.upper()
            if f.name in argv:
                values[f.name] = _parse(f, argv[f.name], "--" + f.name.replace("_", "-"))
            elif environ.get(env_name):
                values[f.name] = _parse(f, environ[env_name], env_name)
            elif f.name in file_values:
                values[f.name] = _parse_file_value(f, file_values[f.name], path)
        if "rings" in file_values:  # checked above as the sizes were read
            values["ring_max_ages"] = _ring_max_ages(file_values["rings"], f"rings in {path}")
        config = cls(**values)
        config._check()
        return config

    def _check(self) -> None:
        check_references(self.alerts, self.notify, str(self.config_file))
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("set both tls_cert and tls_key to serve HTTPS, or neither")
        if self.data_dir is not None and self.store_url != "memory://":
            raise ConfigError("data_dir is for the memory store; Valkey/Redis keeps its own data")
        for key, size in self.rings.items():
            if size < MiB:
                raise ConfigError(f"ring size for {key!r} must be at least 1MiB")
        if self.store_url != "memory://" and (self.ring_max_age or self.ring_max_ages):
            raise ConfigError(
                "ring_max_age and a ring's max_age (retention by age) need the memory store; "
                "a Valkey/Redis store keeps its rings by size only"
            )


def find_config_file(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILE_NAME
        if candidate.is_file():
            return candidate
    return None


def read_alert_config(path: Path) -> AlertConfig:
    """`alerts:` and `notify:` of the config file, read again (SIGHUP), checked as at
    start-up; raises ConfigError naming what is wrong."""
    data = _read_file(path)
    return parse_alert_config(data.get("alerts"), data.get("notify"), str(path))


def _read_file(path: Path) -> dict[str, Any]:
    import yaml  # the server extra; `logd --help` builds serve's flags without it

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(f"config file {path} is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of setting: value")
    known = {f.name for f in Config.settings() if not f.metadata["secret"]}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown setting {key!r} in {path}; see `logd serve --help`")
    return data


def _parse(f: dataclasses.Field[Any], text: str, where: str) -> Any:
    try:
        return f.metadata["parse"](text)
    except ValueError as err:
        raise ConfigError(f"{where} has a bad value: expected {err}") from None


def _parse_file_value(f: dataclasses.Field[Any], value: Any, path: Path | None) -> Any:
    where = f"{f.name} in {path}"
    if "parse_file" in f.metadata:  # alerts, notify: checked by server/alerts/rules.py
        return f.metadata["parse_file"](value, str(path))
    if f.name == "rings":
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must map a ring key (env/svc or prefix*) to a size")
        sizes = {}
        for k, v in value.items():
            entry = _ring_entry(v, f"{where}[{k!r}]")
            if "bytes" in entry:
                sizes[str(k)] = _parse(_RING_SIZE, str(entry["bytes"]), f"{where}[{k!r}]")
        return sizes
    if isinstance(value, dict | list) or value is None:
        raise ConfigError(f"{where} must be a single value")
    return _parse(f, str(value), where)


def _ring_entry(value: Any, where: str) -> dict[str, Any]:
    """A `rings:` entry as a mapping: a plain size is `{bytes: size}`."""
    if not isinstance(value, dict):
        return {"bytes": value}
    unknown = [str(k) for k in value if k not in ("bytes", "max_age")]
    if unknown:
        raise ConfigError(f"{where} has an unknown key {unknown[0]!r}: use bytes and max_age")
    if not value:
        raise ConfigError(f"{where} must give bytes, max_age or both")
    return value


def _ring_max_ages(value: dict[Any, Any], where: str) -> dict[str, float]:
    ages = {}
    for k, v in value.items():
        entry = _ring_entry(v, f"{where}[{k!r}]")
        if "max_age" in entry:
            ages[str(k)] = _parse(_RING_AGE, str(entry["max_age"]), f"{where}[{k!r}].max_age")
    return ages


_RING_SIZE = dataclasses.field(metadata={"parse": _size(MiB, 1024 * 1024 * MiB)})
_RING_AGE = dataclasses.field(metadata={"parse": _duration(1, 3650 * 86400)})
