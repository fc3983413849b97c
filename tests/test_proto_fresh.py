"""The committed generated code must be what `make proto` produces from proto/logd.proto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'proto'}",
         f"--python_out={tmp_path}", f"--mypy_out={tmp_path}", str(ROOT / "proto/logd.proto")],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    for name in ("logd_pb2.py", "logd_pb2.pyi"):
        committed = (ROOT / "service/logd/_pb" / name).read_text()
        assert (tmp_path / name).read_text() == committed, f"{name} is stale: run `make proto`"
