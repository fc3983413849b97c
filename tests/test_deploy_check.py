"""The pure parts of `make deploy-check` (infra/deploy_check/): reading the template the way a
deploy would, and starting a unit the way its [Service] section says. The check itself runs
as `make deploy-check` (root, qemu), not here."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from infra.components.host_boot import BootValues, render_unit
from infra.deploy_check.cfn import resolve
from infra.deploy_check.root import CheckError, content_key

STUBS = Path(__file__).resolve().parents[1] / "infra" / "deploy_check" / "stubs"
VALUES = {"AWS::Region": "eu-west-1", "Secret1": "arn:secret", "Host.PrivateIp": "127.0.0.1"}


def test_resolve_reads_joins_subs_refs_and_attributes() -> None:
    value = {
        "Fn::Base64": {
            "Fn::Join": [
                "",
                [
                    "region ",
                    {"Ref": "AWS::Region"},
                    " id ",
                    {"Ref": "Secret1"},
                    " at ",
                    {"Fn::GetAtt": ["Host", "PrivateIp"]},
                    {"Fn::Sub": " ${AWS::Region}/x"},
                ],
            ]
        }
    }
    assert resolve(value, VALUES) == "region eu-west-1 id arn:secret at 127.0.0.1 eu-west-1/x"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"Ref": "Unknown"}, "refers to Unknown"),
        ({"Fn::Select": [0, ["a"]]}, "cannot resolve"),
    ],
)
def test_resolve_names_what_it_cannot_resolve(value: object, message: str) -> None:
    with pytest.raises(CheckError, match=message) as caught:
        resolve(value, VALUES)
    assert "\n" not in str(caught.value)


def _start_unit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("start_unit", STUBS / "start_unit.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stand_in_reads_the_rendered_units_service_section() -> None:
    boot = BootValues(
        region="eu-west-1",
        wheelhouse_url="s3://b/k.zip",
        read_secret_id="arn:r",
        write_secret_id="arn:w",
        udp_port=6102,
        http_port=6101,
        stack_name="Logd",
        signal_resource="HostInstance",
    )
    directives = _start_unit().service_section(render_unit(boot))
    one = dict(directives)
    assert one["ExecStart"].startswith("/opt/logd/venv/bin/logd serve ")
    assert (one["User"], one["StateDirectory"], one["UMask"]) == ("logd", "logd", "0077")
    environment = [value for key, value in directives if key == "Environment"]
    assert "LOGD_READ_SECRET_ID=arn:r" in environment
    assert "AWS_REGION=eu-west-1" in environment


def test_root_cache_key_follows_the_build_script() -> None:
    key = content_key()
    assert len(key) == 16
    assert int(key, 16) >= 0
