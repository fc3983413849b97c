"""Config.load: flag > env > file > default; unknown keys and bad values name the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
from logd.errors import ConfigError
from logd.server.config import Config, find_config_file, parse_size

MiB = 1024 * 1024


def load(tmp_path: Path, env: dict[str, str] | None = None, **argv: str) -> Config:
    return Config.load(file=None, environ=env or {}, argv=argv, cwd=tmp_path)


def test_defaults(tmp_path: Path) -> None:
    c = load(tmp_path)
    assert c.udp_addr == ("0.0.0.0", 6102)
    assert c.http_addr == ("0.0.0.0", 6101)
    assert c.ring_bytes is None  # derived from the memory budget (tests/test_budget.py)
    assert c.max_rings == 1024
    assert c.udp_rcvbuf == 8 * MiB
    assert c.config_file is None


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    (tmp_path / "logdrc.yml").write_text("ring_bytes: 2MiB\nmax_rings: 5\nmax_tails: 7\n")
    env = {"LOGD_RING_BYTES": "3MiB", "LOGD_MAX_RINGS": "6"}
    c = load(tmp_path, env, ring_bytes="4MiB")
    assert (c.ring_bytes, c.max_rings, c.max_tails, c.query_limit_max) == (4 * MiB, 6, 7, 10_000)
    assert c.config_file == tmp_path / "logdrc.yml"


def test_config_file_is_found_upwards(tmp_path: Path) -> None:
    (tmp_path / "logdrc.yml").write_text("max_rings: 9\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config_file(deep) == tmp_path / "logdrc.yml"
    assert load(deep).max_rings == 9


def test_per_ring_sizes_from_the_file(tmp_path: Path) -> None:
    (tmp_path / "logdrc.yml").write_text("rings:\n  prod/api: 256MiB\n  'dev/*': 2MiB\n")
    assert load(tmp_path).rings == {"prod/api": 256 * MiB, "dev/*": 2 * MiB}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("ring_byts: 2MiB\n", "unknown setting 'ring_byts'"),
        ("read_secret: x\n", "unknown setting 'read_secret'"),  # secrets never in this file
        ("max_rings: many\n", "max_rings in"),
        ("rings: 5\n", "rings in"),
        ("rings:\n  a/b: 10\n", "rings in"),
        ("- a\n", "must be a mapping"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_files_stop_with_one_sentence(tmp_path: Path, content: str, needle: str) -> None:
    (tmp_path / "logdrc.yml").write_text(content)
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[")):
        load(tmp_path)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LOGD_UDP_ADDR": "nowhere"}, "LOGD_UDP_ADDR"),
        ({"LOGD_HTTP_ADDR": "1.2.3.4:70000"}, "LOGD_HTTP_ADDR"),
        ({"LOGD_MAX_AGE": "-1"}, "LOGD_MAX_AGE"),
        ({"LOGD_RING_BYTES": "12 parsecs"}, "LOGD_RING_BYTES"),
        ({"LOGD_LOG_LEVEL": "loud"}, "LOGD_LOG_LEVEL"),
        ({"LOGD_TLS_CERT": "/x.pem"}, "tls_key"),
        ({"LOGD_RINGS": "prod/api=8MiB"}, "LOGD_RINGS .*`rings:` mapping in logdrc.yml"),
    ],
)
def test_bad_env_values_name_the_variable(tmp_path: Path, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load(tmp_path, env)


def test_bad_flag_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--max-frame"):
        load(tmp_path, max_frame="10")


def test_secrets_never_shown_in_repr(tmp_path: Path) -> None:
    c = load(tmp_path, {"LOGD_READ_SECRET": "sekrit-r", "LOGD_WRITE_SECRET": "sekrit-w"})
    assert c.read_secret == "sekrit-r"
    assert "sekrit" not in repr(c)


def test_sizes() -> None:
    assert parse_size("64MiB") == 64 * MiB
    assert parse_size("512k") == 512 * 1024
    assert parse_size("1024") == 1024
    with pytest.raises(ValueError, match="size"):
        parse_size("1.5GiB")
