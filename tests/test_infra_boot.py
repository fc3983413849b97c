"""The boot script's readiness signal, run for real by bash with stand-in commands: a boot
that fails tells CloudFormation FAILURE at once, and never SUCCESS. (The boot that works is
run whole, on arm64, by `make deploy-check`.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

from infra.components.host_boot import BootValues, render_user_data

BOOT = BootValues(
    region="eu-west-1",
    wheelhouse_url="s3://cdk-hnb659fds-assets-111111111111-eu-west-1/0123abcd.zip",
    read_secret_id="arn:aws:secretsmanager:eu-west-1:111111111111:secret:r",
    write_secret_id="arn:aws:secretsmanager:eu-west-1:111111111111:secret:w",
    udp_port=6102,
    http_port=6101,
    stack_name="Logd",
    signal_resource="HostInstance0123ABCD",
)


def _stand_in(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def test_guard_against_a_failed_boot_deploying_successfully(tmp_path: Path) -> None:
    """The AL2023 repositories are unreachable: dnf fails (after its retries), the script
    stops, and its EXIT trap signals FAILURE for this instance, so the deploy fails now."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _stand_in(bin_dir, "aws", f'echo "aws $*" >>{calls}')
    _stand_in(bin_dir, "dnf", f'echo "dnf $*" >>{calls}; exit 1')
    _stand_in(bin_dir, "sleep", "exit 0")  # retry()'s waits, skipped
    instance_id = tmp_path / "instance-id"
    instance_id.write_text("i-0123456789abcdef0\n")
    script = render_user_data(BOOT, instance_id_file=str(instance_id))
    result = subprocess.run(
        ["bash", "-s"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
    )
    assert result.returncode != 0
    recorded = calls.read_text().splitlines()
    assert recorded[:6] == [recorded[0]] * 6  # dnf, tried six times
    assert recorded[0].startswith("dnf install -y")
    assert recorded[6:] == [
        "aws cloudformation signal-resource --region eu-west-1 --stack-name Logd "
        "--logical-resource-id HostInstance0123ABCD --unique-id i-0123456789abcdef0 "
        "--status FAILURE"
    ]
