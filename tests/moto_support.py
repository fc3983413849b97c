"""Test helpers for AWS: `moto_server` as a real HTTP endpoint on 127.0.0.1, secrets set up
the way a deployment has them, and the rotation Lambda loaded from its own directory."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from support import wait_for

ROOT = Path(__file__).resolve().parent.parent
HANDLER_PATH = ROOT / "rotation_lambda" / "handler.py"


def load_rotation_handler() -> ModuleType:
    """rotation_lambda/handler.py as a module: it is a Lambda asset, not part of `logd`."""
    spec = importlib.util.spec_from_file_location("rotation_handler", HANDLER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """A `moto_server` subprocess; stop() ends it by PID."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "moto_server"),
                "-H",
                "127.0.0.1",
                "-p",
                str(self.port),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self._ready, timeout=30)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"moto_server exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.url + "/moto-api/", timeout=2):  # noqa: S310
                return True
        except (urllib.error.URLError, OSError):
            return False

    def client(self) -> Any:
        return boto3.client("secretsmanager", endpoint_url=self.url, region_name="us-east-1")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def create_rotating_secret(client: Any, name: str, value: str) -> str:
    """A secret with rotation enabled, the way a deployment has it, returning its ARN.

    moto runs a rotation Lambda itself on rotate_secret when given one; without a
    Lambda ARN and with RotateImmediately=False it only turns rotation on (and copies
    the value into a new AWSCURRENT version, the old one becoming AWSPREVIOUS).
    """
    arn = client.create_secret(Name=name, SecretString=value)["ARN"]
    client.rotate_secret(
        SecretId=arn, RotationRules={"AutomaticallyAfterDays": 30}, RotateImmediately=False
    )
    return str(arn)


def stages(client: Any, secret_id: str) -> dict[str, str]:
    """Stage label -> version id."""
    described = client.describe_secret(SecretId=secret_id)
    return {
        label: version
        for version, labels in described["VersionIdsToStages"].items()
        for label in labels
    }


def value_at(client: Any, secret_id: str, stage: str) -> str:
    answer = client.get_secret_value(SecretId=secret_id, VersionStage=stage)
    return str(answer["SecretString"])
