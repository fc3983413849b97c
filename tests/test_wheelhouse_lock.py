"""The wheelhouse lock (infra/wheelhouse.lock, infra/lock.py): resolved for the host's
CPython 3.11 on aarch64, never for the interpreter that builds.

The resolution test runs offline on a small index of wheels made here whose dependency
markers are the two that broke the pip-resolved wheelhouse (issue 17): one on
`python_full_version < "3.11.3"` (redis's async-timeout) and one on
`python_version < "3.13"` (typing_extensions). The same command line as `make lock`, from
two or three real interpreters of different versions, gives one answer with both; pip's
resolution, the old way, gives different answers from the same interpreters. `make wheel`
then checks the real lock against PyPI the same way and downloads exactly its pins.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from infra import lock

REPO = Path(__file__).resolve().parents[1]
UV = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
# Build interpreters of different versions found on this machine kind (Debian's system
# 3.11.2, the venv's, pyenv's 3.13 where present).
CANDIDATES = [
    sys.executable,
    "/usr/bin/python3.11",
    *sorted(str(p) for p in Path("/root/.pyenv/versions").glob("3.1[23]*/bin/python3")),
]

pytestmark = pytest.mark.timeout(180)


def _version(python: str) -> str:
    result = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


@pytest.fixture(scope="module")
def interpreters() -> dict[str, str]:
    """Version -> interpreter, one per distinct version; at least two, or the test fails."""
    found: dict[str, str] = {}
    for python in CANDIDATES:
        if Path(python).exists():
            found.setdefault(_version(python), python)
    assert len(found) >= 2, f"need two build interpreters of different versions, found {found}"
    return found


@pytest.fixture(scope="module")
def uv() -> str:
    assert UV is not None, "uv is not installed in the venv: run `make lock` (it installs uv)"
    return UV


def _wheel(index: Path, name: str, version: str, requires: list[str]) -> None:
    dist = f"{name}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Dist: {r}" for r in requires]
    with zipfile.ZipFile(index / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        archive.writestr(f"{name}/__init__.py", "")
        archive.writestr(f"{dist}/METADATA", "\n".join(metadata) + "\n")
        archive.writestr(
            f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        )
        archive.writestr(f"{dist}/RECORD", "")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project laid out like this repository (pyproject.toml with the aws and fast extras,
    infra/wheelhouse.in) that needs `app`, and an index of the wheels it resolves to."""
    root = tmp_path_factory.mktemp("project")
    index = root / "index"
    index.mkdir()
    _wheel(
        index,
        "app",
        "1.0",
        ['oldpy; python_full_version < "3.11.3"', 'newer; python_version < "3.13"'],
    )
    _wheel(index, "oldpy", "1.0", [])
    _wheel(index, "newer", "1.0", [])
    _wheel(index, "backend", "1.0", [])
    (root / "pyproject.toml").write_text(
        '[project]\nname = "lab"\nversion = "0"\ndependencies = ["app"]\n'
        "[project.optional-dependencies]\n" + "".join(f"{e} = []\n" for e in lock.EXTRAS)
    )
    (root / "infra").mkdir()
    (root / "infra" / "wheelhouse.in").write_text("backend\n")
    return root


def test_uv_resolves_the_same_set_from_every_build_interpreter(
    uv: str, interpreters: dict[str, str], project: Path
) -> None:
    offline = ["--no-index", "--find-links", str(project / "index"), "--offline"]
    answers = {
        version: lock.pins(lock.resolve(uv, python=python, extra=offline, cwd=project))
        for version, python in interpreters.items()
    }
    expected = {"app": "1.0", "oldpy": "1.0", "newer": "1.0", "backend": "1.0"}
    assert answers == dict.fromkeys(interpreters, expected)


def _pip_download(python: str, index: Path, dest: Path) -> set[str]:
    """What the old Makefile did: pip, told the target, resolving from `python`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    target = ["--platform", "manylinux_2_28_aarch64", "--python-version", "3.11"]
    argv = [python, "-m", "pip", "download", "--quiet", "--no-index", "--find-links", str(index)]
    argv += ["--dest", str(dest), "--only-binary=:all:", *target, "--implementation", "cp", "app"]
    subprocess.run(
        argv,
        check=True,
        env=env,
        timeout=120,
        capture_output=True,
    )
    return {p.name.split("-")[0] for p in dest.glob("*.whl")}


def test_pip_resolves_by_the_interpreter_that_runs_it(
    interpreters: dict[str, str], project: Path, tmp_path: Path
) -> None:
    """Why the lock exists: the same pip command keeps or drops a dependency by the build
    interpreter's own version, whatever --python-version says."""
    with_pip = {v: p for v, p in interpreters.items() if _has_pip(p)}
    assert len(with_pip) >= 2, f"need two interpreters with pip, found {with_pip}"
    sets = {
        version: frozenset(_pip_download(python, project / "index", tmp_path / version))
        for version, python in with_pip.items()
    }
    assert len(set(sets.values())) > 1, sets


def _has_pip(python: str) -> bool:
    result = subprocess.run(
        [python, "-m", "pip", "--version"], capture_output=True, check=False, timeout=60
    )
    return result.returncode == 0


# --- the committed lock ------------------------------------------------------------------


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = list(project["dependencies"])
    for extra in lock.EXTRAS:
        names += project["optional-dependencies"][extra]
    names += [
        line
        for line in lock.EXTRA_IN.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [Requirement(name) for name in names]


def test_lock_pins_every_requirement_of_the_host_at_a_version_it_allows() -> None:
    pins = lock.pins(lock.LOCK.read_text())
    for requirement in _requirements():
        name = lock.normalize(requirement.name)
        assert name in pins, f"{name} is not in the lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])


def test_lock_has_no_markers_and_a_hash_for_every_pin() -> None:
    """No marker is left for pip to judge with the build interpreter, and pip downloads
    nothing but these files (--require-hashes)."""
    text = lock.LOCK.read_text()
    lines = lock.requirement_lines(lock.body(text))
    assert len(lines) == len(lock.pins(text)) > 10
    for line in lines:
        assert ";" not in line, line
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", line), line
    assert text.startswith(lock.HEADER)


def test_lock_holds_what_a_pip_resolution_left_out() -> None:
    """The two of issue 17: dropped when pip ran on Python 3.13 and on 3.11.7."""
    pins = lock.pins(lock.LOCK.read_text())
    assert {"typing-extensions", "async-timeout", "setuptools"} <= set(pins)


def test_verify_refuses_a_wheelhouse_that_is_not_the_lock(tmp_path: Path) -> None:
    text = (
        "a==1.0 \\\n    --hash=sha256:"
        + "0" * 64
        + "\nb-c==2.0 \\\n    --hash=sha256:"
        + "1" * 64
        + "\n"
    )
    for name in ("a-1.0-py3-none-any.whl", "b_c-2.0-cp311-cp311-manylinux_2_28_aarch64.whl"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "logd-0.1.0-py3-none-any.whl").write_bytes(b"")
    lock.verify(tmp_path, text)
    (tmp_path / "extra-9-py3-none-any.whl").write_bytes(b"")
    (tmp_path / "a-1.0-py3-none-any.whl").unlink()
    with pytest.raises(lock.LockError, match=r"missing: a==1.0; not locked: extra==9\)$"):
        lock.verify(tmp_path, text)


def test_make_wheel_downloads_exactly_the_lock_for_the_host() -> None:
    makefile = (REPO / "Makefile").read_text()
    download = re.search(r"pip download (.*?)-r \$\(WHEELHOUSE_LOCK\)", makefile, re.S)
    assert download is not None
    assert "--no-deps --require-hashes" in download.group(1)
    assert "$(FOR_INSTANCE)" in download.group(1)
    assert "infra.lock --uv $(UV) check" in makefile
    assert "infra.lock verify $(WHEELHOUSE)" in makefile
    assert lock.TARGET == (
        "--python-version",
        "3.11",
        "--python-platform",
        "aarch64-manylinux_2_28",
    )
