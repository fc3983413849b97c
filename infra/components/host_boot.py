"""What the logd host runs at first boot: the user-data script and the systemd unit.

Pure text rendering with no CDK in it, so tests render both with plain values and check
them with `bash -n` and `systemd-analyze`; the stack renders them with CloudFormation
tokens (secret ARNs, the asset URL), which CDK turns into an `Fn::Join`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

FILES = Path(__file__).parent / "files"

# The Python that `make wheel` builds the wheelhouse for (its INSTANCE_PYTHON must match).
INSTANCE_PYTHON_VERSION = "3.11"
PREFIX = "/opt/logd"
VENV = f"{PREFIX}/venv"
# The server (aiohttp, PyYAML, redis, uvloop) and boto3 for the Secrets Manager key source.
REQUIREMENT = "logd[server,aws]"
# Asked for by logd and allowed by net.core.rmem_max: room for bursts of small frames.
UDP_RCVBUF = 32 * 1024 * 1024
# Root-only, read by systemd (as root) before it starts logd as the logd user.
STORE_ENV_FILE = "/etc/logd/store.env"
STORE_PORT = 6379
# What the boot waits on before it tells CloudFormation the host is ready (and what the load
# balancer checks): 200 once logd's UDP listener runs, which is after its secrets loaded.
HEALTH_PATH = "/healthz"
# 150 tries 2 s apart: about 5 minutes for logd to come up once its unit started.
HEALTH_ATTEMPTS = 150
# How long CloudFormation waits for the signal: dnf, the C path's build, then /healthz.
BOOT_TIMEOUT_MINUTES = 20
# Where cloud-init keeps the instance's id (the signal's unique id), read without IMDS.
INSTANCE_ID_FILE = "/var/lib/cloud/data/instance-id"

_PLACEHOLDER = re.compile(r"\{\{([A-Z_]+)\}\}")


@dataclass(frozen=True, kw_only=True)
class BootValues:
    """The deploy-time values the two files need (CloudFormation tokens in the stack)."""

    region: str
    """The AWS region, for the AWS CLI and boto3 (saves an IMDS lookup)."""
    wheelhouse_url: str
    """`s3://bucket/key.zip` of the wheelhouse asset."""
    read_secret_id: str
    """ARN of the read secret."""
    write_secret_id: str
    """ARN of the write secret."""
    udp_port: int
    """logd's UDP port for signed frames."""
    http_port: int
    """logd's HTTP port for reads."""
    stack_name: str
    """The stack the boot signals (its CreationPolicy waits for the signal)."""
    signal_resource: str
    """Logical id of the resource that waits for the signal: the instance, or the group."""
    store_host: str | None = None
    """Valkey primary endpoint (TLS); None: the embedded store in logd's state directory."""
    store_secret_id: str | None = None
    """ARN of the Valkey auth token, fetched at boot into STORE_ENV_FILE (with store_host)."""


def render_unit(values: BootValues) -> str:
    """The systemd unit `logd.service`."""
    return _fill(
        (FILES / "logd.service").read_text(encoding="utf-8"),
        {
            "VENV": VENV,
            "UDP_PORT": str(values.udp_port),
            "HTTP_PORT": str(values.http_port),
            "REGION": values.region,
            "READ_SECRET_ID": values.read_secret_id,
            "WRITE_SECRET_ID": values.write_secret_id,
            "UDP_RCVBUF": str(UDP_RCVBUF),
            "STORE": _store_lines(values),
        },
    )


def render_user_data(values: BootValues, *, instance_id_file: str = INSTANCE_ID_FILE) -> str:
    """The first-boot script: install Python and logd offline, tune the kernel, start the unit,
    and signal CloudFormation once logd answers (or as soon as a step fails). Tests run it
    with their own instance_id_file."""
    return _fill(
        (FILES / "user_data.sh").read_text(encoding="utf-8"),
        {
            "PYTHON": f"python{INSTANCE_PYTHON_VERSION}",
            "PREFIX": PREFIX,
            "VENV": VENV,
            "REGION": values.region,
            "WHEELHOUSE_URL": values.wheelhouse_url,
            "HTTP_PORT": str(values.http_port),
            "HEALTH_PATH": HEALTH_PATH,
            "HEALTH_ATTEMPTS": str(HEALTH_ATTEMPTS),
            "INSTANCE_ID_FILE": instance_id_file,
            "STACK_NAME": values.stack_name,
            "SIGNAL_RESOURCE": values.signal_resource,
            "REQUIREMENT": REQUIREMENT,
            "UDP_RCVBUF": str(UDP_RCVBUF),
            "UNIT": render_unit(values).rstrip("\n"),
            "STORE_PASSWORD": render_store_password(values),
        },
    )


def _store_lines(values: BootValues) -> str:
    """The unit's store: the local state directory, or Valkey (logd refuses both at once)."""
    if values.store_host is None:
        return "Environment=LOGD_DATA_DIR=/var/lib/logd"
    return (
        f"Environment=LOGD_STORE_URL=rediss://{values.store_host}:{STORE_PORT}/0\n"
        "# LOGD_STORE_PASSWORD, written at first boot; logd reads it from its environment only.\n"
        f"EnvironmentFile={STORE_ENV_FILE}"
    )


def render_store_password(values: BootValues, *, env_file: str = STORE_ENV_FILE) -> str:
    """With Valkey, the boot step that puts the auth token in a root-only file, never on a
    command line or in the boot log (printf is a shell builtin; the value only passes
    through a variable); without, nothing. Tests run it with their own env_file."""
    if values.store_host is None:
        return ""
    if not values.store_secret_id:
        raise ValueError("a Valkey store needs the ARN of its auth token secret")
    return _fill(
        (FILES / "store_password.sh").read_text(encoding="utf-8"),
        {
            "REGION": values.region,
            "STORE_SECRET_ID": values.store_secret_id,
            "STORE_ENV_DIR": str(PurePosixPath(env_file).parent),
            "STORE_ENV_FILE": env_file,
        },
    )


def _fill(template: str, fields: Mapping[str, str]) -> str:
    """Replace every `{{NAME}}`; a name without a value is a bug in this module (KeyError)."""
    return _PLACEHOLDER.sub(lambda match: fields[match.group(1)], template)
