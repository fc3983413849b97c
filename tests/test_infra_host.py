"""What the logd host boots with (the user-data script and the systemd unit, checked with
bash and systemd's own tools), and the CDK app's context options."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from logd.server.budget import plan
from logd.server.config import Config

from infra.app import WheelhouseError, build_app, check_wheelhouse
from infra.components.host_boot import (
    INSTANCE_PYTHON_VERSION,
    UDP_RCVBUF,
    BootValues,
    render_unit,
    render_user_data,
)
from infra.settings import DeploySettings, SettingsError

REPO = Path(__file__).resolve().parents[1]
READ_ARN = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:logd-read-AbCdEf"
WRITE_ARN = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:logd-write-GhIjKl"
BOOT = BootValues(
    region="eu-west-1",
    wheelhouse_url="s3://cdk-hnb659fds-assets-111111111111-eu-west-1/0123abcd.zip",
    read_secret_id=READ_ARN,
    write_secret_id=WRITE_ARN,
    udp_port=6102,
    http_port=6101,
    stack_name="Logd",
    signal_resource="HostInstance0123ABCD",
)
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
SYSTEM_UNITS = Path("/usr/lib/systemd/system")
needs_systemd = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None or not SYSTEM_UNITS.is_dir(), reason="systemd-analyze not installed"
)


def _directives(unit: str) -> dict[str, list[str]]:
    """Key -> values of a unit file (keys may repeat), comments and sections left out."""
    found: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """A root for `systemd-analyze --root`: the system's units, the rendered unit, and an
    executable where ExecStart expects logd."""
    shutil.copytree(SYSTEM_UNITS, tmp_path / "usr/lib/systemd/system", symlinks=True)
    (tmp_path / "etc/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/systemd/system/logd.service").write_text(render_unit(BOOT))
    logd = tmp_path / "opt/logd/venv/bin/logd"
    logd.parent.mkdir(parents=True)
    logd.write_text("#!/bin/sh\n")
    logd.chmod(0o755)
    return tmp_path


@needs_systemd
def test_unit_passes_systemd_verify_without_a_warning(unit_root: Path) -> None:
    result = subprocess.run(
        [str(SYSTEMD_ANALYZE), "verify", f"--root={unit_root}", "logd.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout + result.stderr == ""


@needs_systemd
def test_unit_sandbox_scores_ok_in_systemd_security(unit_root: Path) -> None:
    # --threshold is on systemd's 0-100 scale: 20 means an exposure of 2.0 ("OK") at most.
    result = subprocess.run(
        [
            str(SYSTEMD_ANALYZE),
            "security",
            "--offline=true",
            f"--root={unit_root}",
            "--threshold=20",
            "--no-pager",
            "logd.service",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    exposure = re.search(r"Overall exposure level for logd.service: (\d+\.\d)", result.stdout)
    assert exposure is not None
    assert float(exposure.group(1)) <= 2.0


def test_unit_runs_logd_hardened_as_its_own_user() -> None:
    unit = _directives(render_unit(BOOT))
    expected = {
        "User": ["logd"],
        "Restart": ["on-failure"],
        "ProtectSystem": ["strict"],
        "NoNewPrivileges": ["yes"],
        "CapabilityBoundingSet": [""],
        "PrivateTmp": ["yes"],
        "StateDirectory": ["logd"],
    }
    assert {key: unit.get(key) for key in expected} == expected
    assert unit["MemoryMax"] == ["75%"]


def test_unit_settings_are_ones_logd_accepts(tmp_path: Path) -> None:
    """Every LOGD_* variable and ExecStart flag is a real `logd serve` setting, and parses."""
    unit = _directives(render_unit(BOOT))
    environ = dict(item.split("=", 1) for item in unit["Environment"])
    logd_env = {name: value for name, value in environ.items() if name.startswith("LOGD_")}
    fields = {f"LOGD_{f.name.upper()}" for f in Config.settings()}
    assert set(logd_env) <= fields
    (exec_start,) = unit["ExecStart"]
    program, command, *flags = exec_start.split()
    assert (program, command) == ("/opt/logd/venv/bin/logd", "serve")
    argv = {
        flag.removeprefix("--").replace("-", "_"): value
        for flag, value in zip(flags[::2], flags[1::2], strict=True)
    }
    config = Config.load(file=None, environ=logd_env, argv=argv, cwd=tmp_path)
    assert config.read_secret_id == READ_ARN
    assert config.write_secret_id == WRITE_ARN
    assert config.udp_addr == ("0.0.0.0", 6102)
    assert config.http_addr == ("0.0.0.0", 6101)
    assert config.udp_rcvbuf == UDP_RCVBUF
    assert config.data_dir == Path("/var/lib/logd")
    assert config.max_rings == 64


def test_the_hosts_memory_budget_fits_its_memory_max_and_leaves_rings_room(
    tmp_path: Path,
) -> None:
    """On the 2 GiB t4g.small, logd's budget is 70% of the unit's MemoryMax (75%): it plans
    the unit's settings without refusing them, with rings of a useful size."""
    unit = _directives(render_unit(BOOT))
    environ = dict(item.split("=", 1) for item in unit["Environment"])
    logd_env = {name: value for name, value in environ.items() if name.startswith("LOGD_")}
    config = Config.load(file=None, environ=logd_env, argv={}, cwd=tmp_path)
    memory_max = int(2 * 1024**3 * 0.75)
    budget = plan(config, engine="c", memory=(memory_max, "cgroup memory.max"))
    assert sum(budget.parts().values()) <= budget.limit < memory_max
    assert budget.ring_bytes >= 8 * 1024 * 1024


def test_user_data_is_valid_bash_that_stops_at_the_first_error() -> None:
    script = render_user_data(BOOT)
    assert script.startswith("#!/bin/bash\n")
    assert "\nset -euo pipefail\n" in script
    assert "{{" not in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True, timeout=30)


def test_user_data_raises_rmem_max_to_what_logd_asks_for() -> None:
    script = render_user_data(BOOT)
    assert f"\nnet.core.rmem_max = {UDP_RCVBUF}\n" in script
    assert f"\nEnvironment=LOGD_UDP_RCVBUF={UDP_RCVBUF}\n" in script


def test_user_data_writes_the_unit_verbatim() -> None:
    script = render_user_data(BOOT)
    written = re.search(r"<<'UNIT'\n(.*)\nUNIT\n", script, re.DOTALL)
    assert written is not None
    assert written.group(1) + "\n" == render_unit(BOOT)


def test_makefile_builds_wheels_for_the_python_the_host_installs() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert f"\nINSTANCE_PYTHON := {INSTANCE_PYTHON_VERSION}\n" in makefile
    dnf = f"retry dnf install -y --setopt=install_weak_deps=False python{INSTANCE_PYTHON_VERSION} "
    assert dnf in render_user_data(BOOT)


# --- context options -----------------------------------------------------------------


def _settings(**context: object) -> DeploySettings:
    return DeploySettings.from_context(context.get)


def test_defaults_deploy_a_new_vpc_with_a_small_graviton_host() -> None:
    assert _settings() == DeploySettings(
        vpc_id=None,
        vpc_cidr="10.0.0.0/16",
        create_endpoints=True,
        instance_type="t4g.small",
        rotation_days=30,
        allowed_cidrs=(),
        allowed_prefix_list=None,
        alarm_topic_arn=None,
    )


def test_options_parse_from_command_line_text() -> None:
    settings = _settings(
        vpc_id="vpc-0123abcd",
        create_endpoints="false",
        instance_type="c7gn.large",
        rotation_days="7",
        allowed_cidrs="10.1.0.0/16, 192.168.0.0/24",
        allowed_prefix_list="pl-0123abcd",
    )
    assert settings.vpc_id == "vpc-0123abcd"
    assert settings.create_endpoints is False
    assert settings.instance_type == "c7gn.large"
    assert settings.rotation_days == 7
    assert settings.allowed_cidrs == ("10.1.0.0/16", "192.168.0.0/24")
    assert settings.allowed_prefix_list == "pl-0123abcd"


def test_options_parse_from_cdk_json_types() -> None:
    settings = _settings(rotation_days=14, create_endpoints=False, allowed_cidrs=["10.9.0.0/16"])
    assert (settings.rotation_days, settings.create_endpoints) == (14, False)
    assert settings.allowed_cidrs == ("10.9.0.0/16",)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("allowed_cidrs", "0.0.0.0/0", "whole internet"),
        ("allowed_cidrs", "10.1.0.0/16,nonsense", "IPv4 networks"),
        ("allowed_cidrs", "10.1.0.1/16", "IPv4 networks"),
        ("instance_type", "t3.small", "Graviton"),
        ("instance_type", "g5.xlarge", "Graviton"),
        ("rotation_days", "0", "1 to 365"),
        ("rotation_days", "soon", "1 to 365"),
        ("vpc_id", "default", "VPC id"),
        ("allowed_prefix_list", "my-list", "prefix list id"),
        ("create_endpoints", "maybe", "true or false"),
        ("alarm_topic_arn", "ops-alerts", "SNS topic ARN"),
        ("az", "us-east-1", "availability zone"),
        ("az", "use1-az1", "availability zone"),
    ],
)
def test_guard_against_bad_options(option: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        _settings(**{option: value})
    assert str(caught.value).startswith(f"context {option} ")
    assert "\n" not in str(caught.value)


def test_existing_vpc_needs_an_account_and_region_to_look_it_up() -> None:
    with pytest.raises(SettingsError, match="needs AWS credentials"):
        build_app(context={"vpc_id": "vpc-0123abcd"}, environ={})


def test_synth_refuses_a_wheelhouse_without_logd(tmp_path: Path) -> None:
    with pytest.raises(WheelhouseError, match="make wheel"):
        check_wheelhouse(tmp_path)
    (tmp_path / "logd-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    assert check_wheelhouse(tmp_path) == tmp_path
