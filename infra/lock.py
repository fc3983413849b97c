"""The wheelhouse lock: logd's dependencies resolved for the host, not for the build machine.

The host runs CPython 3.11 on aarch64 Amazon Linux 2023 (glibc 2.34). pip evaluates
dependency markers with the interpreter that runs it, whatever `--python-version` says, so a
wheelhouse that pip resolves depends on who runs `make wheel`: Python 3.13 leaves
`typing_extensions` out, 3.11.7 leaves `async-timeout` out (redis needs it below 3.11.3).
uv resolves for a stated target instead (TARGET below); `make lock` writes LOCK with it,
and `make wheel` downloads exactly the pinned files (`--no-deps --require-hashes`), so the
interpreter that builds takes no part in what the wheelhouse holds.

`--python-version 3.11` resolves for 3.11.0, so markers on `python_full_version` are
taken at their widest: the lock holds async-timeout, which pip installs on a 3.11 below
3.11.3 (Debian's 3.11.2 in `make deploy-check`) and skips on AL2023's 3.11.14 and later.

    python -m infra.lock lock                  write LOCK (keeps the pins that still fit)
    python -m infra.lock check [--python P]    LOCK is what resolving again gives, per P
    python -m infra.lock verify DIR            DIR holds exactly LOCK's wheels, plus logd
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "infra" / "wheelhouse.lock"
# What the host installs besides logd's own requirements: the sdist's build backend.
EXTRA_IN = ROOT / "infra" / "wheelhouse.in"
EXTRAS = ("server", "aws")
# The host: CPython 3.11 on Graviton, Amazon Linux 2023 (glibc 2.34 >= manylinux_2_28).
TARGET = ("--python-version", "3.11", "--python-platform", "aarch64-manylinux_2_28")
HEADER = (
    "# The wheelhouse for the logd host: CPython 3.11, aarch64 manylinux_2_28 (AL2023).\n"
    "# Written by `make lock` (infra/lock.py, uv pip compile for that target); do not edit.\n"
)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
_WHEEL = re.compile(r"^([^-]+)-([^-]+)-.+\.whl$")


class LockError(Exception):
    """The lock does not match the requirements or the wheelhouse; one sentence."""


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def compile_argv(
    uv: str, *, python: str | None, output: Path, extra: Sequence[str] = ()
) -> list[str]:
    """The one `uv pip compile` command line, for `make lock` and every check."""
    argv = [uv, "pip", "compile", "--quiet", *TARGET, "--only-binary", ":all:"]
    argv += [arg for extra_name in EXTRAS for arg in ("--extra", extra_name)]
    argv += ["--generate-hashes", "--no-header", "--output-file", str(output)]
    if python is not None:
        argv += ["--python", python]
    return [*argv, *extra, "pyproject.toml", str(EXTRA_IN.relative_to(ROOT))]


def resolve(
    uv: str, *, python: str | None, seed: str = "", extra: Sequence[str] = (), cwd: Path = ROOT
) -> str:
    """The lock's body as uv resolves it now; `seed` (an earlier body) gives the pins to keep."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "lock.txt"
        output.write_text(seed, encoding="utf-8")
        result = subprocess.run(  # noqa: S603 - uv with our own arguments
            compile_argv(uv, python=python, output=output, extra=extra),
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
            env={**os.environ, "UV_NO_CONFIG": "1"},
        )
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise LockError(f"uv could not resolve the wheelhouse for the host: {last}")
        return output.read_text(encoding="utf-8")


def body(lock_text: str) -> str:
    """The lock without its header comment."""
    return lock_text.removeprefix(HEADER)


def pins(lock_text: str) -> dict[str, str]:
    """Normalized name -> pinned version of every requirement in a lock."""
    found = {}
    for line in lock_text.splitlines():
        match = _PIN.match(line)
        if match:
            found[normalize(match.group(1))] = match.group(2)
    return found


def requirement_lines(lock_text: str) -> list[str]:
    """The requirement lines (continuations joined), without comments."""
    joined = re.sub(r"\\\n", " ", lock_text)
    return [line for line in joined.splitlines() if line and not line.lstrip().startswith("#")]


def wheel_pins(directory: Path) -> dict[str, str]:
    """Normalized name -> version of every wheel in a directory."""
    found = {}
    for path in sorted(directory.glob("*.whl")):
        match = _WHEEL.match(path.name)
        if match is None:
            raise LockError(f"{path.name} is not a wheel file name")
        found[normalize(match.group(1))] = match.group(2)
    return found


def verify(directory: Path, lock_text: str) -> None:
    """The directory holds one wheel per pin of the lock, at that version, and logd."""
    have = wheel_pins(directory)
    have.pop("logd", None)
    want = pins(lock_text)
    if have != want:
        missing = sorted(f"{n}=={v}" for n, v in want.items() if have.get(n) != v)
        extra = sorted(f"{n}=={v}" for n, v in have.items() if want.get(n) != v)
        raise LockError(
            f"{directory} does not hold exactly the wheels of {LOCK.name} "
            f"(missing: {', '.join(missing) or 'none'}; not locked: {', '.join(extra) or 'none'})"
        )


def check(uv: str, pythons: Sequence[str | None]) -> None:
    """Resolving again, from each interpreter, gives the committed lock."""
    committed = body(LOCK.read_text(encoding="utf-8"))
    for python in pythons:
        if resolve(uv, python=python, seed=committed) != committed:
            raise LockError(
                f"{LOCK.relative_to(ROOT)} no longer matches pyproject.toml and "
                f"{EXTRA_IN.name} (resolved with {python or 'the default Python'}): "
                "run `make lock`"
            )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.lock", description=__doc__)
    parser.add_argument("--uv", default=str(Path(sys.executable).with_name("uv")))
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("lock")
    checking = commands.add_parser("check")
    checking.add_argument("--python", action="append", default=[])
    verifying = commands.add_parser("verify")
    verifying.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "lock":
            seed = body(LOCK.read_text(encoding="utf-8")) if LOCK.exists() else ""
            LOCK.write_text(HEADER + resolve(args.uv, python=None, seed=seed), encoding="utf-8")
        elif args.command == "check":
            check(args.uv, args.python or [None])
        else:
            verify(args.directory, LOCK.read_text(encoding="utf-8"))
    except LockError as err:
        print(f"wheelhouse lock: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
