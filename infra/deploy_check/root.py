"""The Debian arm64 root of `make deploy-check`: qemu's binfmt handler, the cached root
image, and a fresh copy of it per run with /proc and /dev mounted.

The root image is a tar file named by a content key, the hash of build_root.sh (which
holds every input of the build). It is looked up in build/deploy-check, then in the
machine's cache (DEPLOY_CHECK_CACHE, /var/cache/logd-deploy-check by default, so that a
fresh clone on the same machine, like CI's, does not spend 10 minutes rebuilding it), and
built with debootstrap only when neither has it. Each run unpacks it anew, so no state of
an earlier boot is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build_root.sh"
BINFMT = Path("/proc/sys/fs/binfmt_misc")
HANDLER = BINFMT / "qemu-aarch64"


class CheckError(Exception):
    """The check cannot go on; the message is one sentence."""


def content_key() -> str:
    return hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:16]


def _run(argv: list[str], what: str, timeout: float = 120) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)  # noqa: S603
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckError(f"{what} failed: {detail}")


@contextlib.contextmanager
def arm64_emulation() -> Iterator[list[str]]:
    """qemu-aarch64 registered with binfmt_misc for the duration; undone only where this
    check did it (mounted the file system, enabled the handler). Yields what it did."""
    done: list[str] = []
    try:
        if not os.path.ismount(BINFMT):
            _run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], "mounting binfmt_misc")
            done.append("mounted binfmt_misc")
        if not HANDLER.exists() or "enabled" not in HANDLER.read_text():
            _run(["update-binfmts", "--enable", "qemu-aarch64"], "registering qemu-aarch64")
            done.append("registered qemu-aarch64")
        if "F" not in _flags():
            raise CheckError(
                "the qemu-aarch64 binfmt handler lacks the F flag, so it cannot run in a chroot"
            )
        yield done
    finally:
        if "registered qemu-aarch64" in done:
            subprocess.run(["update-binfmts", "--disable", "qemu-aarch64"], check=False)  # noqa: S607
        if "mounted binfmt_misc" in done:
            subprocess.run(["umount", str(BINFMT)], check=False)  # noqa: S603, S607


def _flags() -> str:
    for line in HANDLER.read_text().splitlines():
        if line.startswith("flags:"):
            return line.split(":", 1)[1].strip()
    return ""


def root_image(work: Path, cache: Path) -> tuple[Path, str]:
    """The root's tar file in `work` and where it came from: build/, the machine's cache, or
    a new debootstrap build (stored in both)."""
    name = f"arm64-root-{content_key()}.tar"
    local, shared = work / name, cache / name
    if local.exists():
        return local, f"build/ ({name})"
    work.mkdir(parents=True, exist_ok=True)
    for stale in work.glob("arm64-root-*.tar"):
        stale.unlink()
    origin = f"the machine cache {shared}"
    if not shared.exists():
        cache.mkdir(parents=True, exist_ok=True)
        _run(["bash", str(BUILD_SCRIPT), str(shared)], "building the arm64 root", timeout=3600)
        origin = f"a new debootstrap build, kept in {shared}"
    try:
        os.link(shared, local)
    except OSError:  # another file system
        shutil.copyfile(shared, local)
    return local, origin


@contextlib.contextmanager
def fresh_root(image: Path, root: Path) -> Iterator[Path]:
    """The image unpacked into `root` (emptied first), /proc and /dev mounted while in use."""
    if root.exists():
        _unmount_all(root)
        shutil.rmtree(root)
    root.mkdir(parents=True)
    _run(["tar", "-C", str(root), "--numeric-owner", "-xf", str(image)], "unpacking the root")
    mounted: list[Path] = []
    try:
        for kind, target in (("proc", root / "proc"), ("dev", root / "dev")):
            argv = (
                ["mount", "-t", "proc", "proc"] if kind == "proc" else ["mount", "--bind", "/dev"]
            )
            _run([*argv, str(target)], f"mounting {target}")
            mounted.append(target)
        yield root
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)  # noqa: S603, S607


def _unmount_all(root: Path) -> None:
    """Left-over mounts of an interrupted run, so that removing the old root cannot reach
    the machine's /dev."""
    for target in (root / "dev", root / "proc"):
        if os.path.ismount(target):
            subprocess.run(["umount", "-l", str(target)], check=False)  # noqa: S603, S607
        if os.path.ismount(target):
            raise CheckError(f"{target} is still mounted; unmount it before the next check")
