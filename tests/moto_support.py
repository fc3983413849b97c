"""Test helpers for AWS: `moto_server` as a real HTTP endpoint on 127.0.0.1, secrets set up
the way a deployment has them, and the rotation Lambda loaded from its own directory."""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
from support import free_port, stop_process, wait_for

ROOT = Path(__file__).resolve().parent.parent
HANDLER_PATH = ROOT / "rotation_lambda" / "handler.py"
# Explicit, so that clients made outside the clean environment (module fixtures) never
# pick up a developer's real credentials.
FAKE_AWS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
}


def load_rotation_handler() -> ModuleType:
    """rotation_lambda/handler.py as a module: it is a Lambda asset, not part of `logd`."""
    spec = importlib.util.spec_from_file_location("rotation_handler", HANDLER_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

    def run_no_lambdas(self) -> None:
        """moto's config: Lambda invocations run no code (see rotation_function)."""
        body = json.dumps({"lambda": {"use_docker": False}}).encode()
        request = urllib.request.Request(self.url + "/moto-api/config", data=body, method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def client(self) -> Any:
        return boto3.client("secretsmanager", endpoint_url=self.url, **FAKE_AWS)

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


def rotation_function(endpoint_url: str | None = None) -> str:
    """A Lambda function in moto for RotateSecret to name; its ARN.

    moto "invokes" it on rotate_secret, but with its Lambda config `use_docker` off
    (set by the caller) that runs no code: the tests drive the four steps themselves.
    """
    kw: dict[str, Any] = {"endpoint_url": endpoint_url, **FAKE_AWS}
    role = boto3.client("iam", **kw).create_role(RoleName="rotation", AssumeRolePolicyDocument="{}")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.write(HANDLER_PATH, "handler.py")
    function = boto3.client("lambda", **kw).create_function(
        FunctionName="logd-rotation",
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
    )
    return str(function["FunctionArn"])


def start_rotation(client: Any, secret_id: str, function_arn: str) -> str:
    """RotateSecret: turns rotation on and adds a version labelled AWSPENDING, without a
    value yet, as Secrets Manager does before createSecret; returns its token."""
    answer = client.rotate_secret(
        SecretId=secret_id,
        RotationLambdaARN=function_arn,
        RotationRules={"AutomaticallyAfterDays": 30},
    )
    return str(answer["VersionId"])


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
