"""The dependency rules of the tree, as facts: an app that imports the client loads none of
the server's libraries; every module imports alone, warning-free; no module imports
another that imports it back, not even for type checking or inside a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import logd
import pytest

PACKAGE = Path(logd.__file__).parent
SERVER_LIBRARIES = ("aiohttp", "redis", "yaml", "boto3", "botocore", "click", "uvloop")


def _modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        if "_pb" not in parts and rel.name != "__main__":  # __main__ runs the CLI
            names.append(".".join(parts))
    return names


MODULES = _modules()
CLIENT = ["logd.logger", "logd.secrets.provider"] + [
    m for m in MODULES if m.startswith("logd.client")
]


def test_the_tree_has_the_parts_it_is_documented_with() -> None:
    for part in ("logd.client", "logd.cli", "logd.server.ingest", "logd.server.http",
                 "logd.server.store", "logd.server.secrets", "logd.logger"):  # fmt: skip
        assert part in MODULES


def _loaded(modules: list[str], libraries: tuple[str, ...]) -> str:
    """Which of `libraries` a fresh interpreter has loaded after importing `modules`."""
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + f"print(','.join(sorted(m for m in {libraries!r} if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_client_loads_no_server_library() -> None:
    assert _loaded(CLIENT, SERVER_LIBRARIES) == ""
    # The CLI (`pip install logd` has it) needs click, and nothing of the server's.
    cli = [m for m in MODULES if m.startswith("logd.cli")]
    assert _loaded(cli, tuple(lib for lib in SERVER_LIBRARIES if lib != "click")) == ""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, logd.server.app; print('aiohttp' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert loaded.stdout.strip() == "True"  # the check above can see a library when it loads


@pytest.mark.parametrize("module", MODULES)
def test_every_module_imports_alone_without_warnings(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", f"import {module}"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def _imports(module: str) -> set[str]:
    """Every logd module this one names in an import: at the top, under TYPE_CHECKING or
    inside a function (parent packages that Python imports implicitly do not count)."""
    path = PACKAGE.parent.joinpath(*module.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if m in MODULES and m != module}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A path that comes back to where it started, or None (depth first)."""
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> list[str] | None:
        if m in path:
            return [*path[path.index(m) :], m]
        if m in done:
            return None
        for n in sorted(graph[m]):
            cycle = visit(n, [*path, m])
            if cycle:
                return cycle
        done.add(m)
        return None

    for m in sorted(graph):
        cycle = visit(m, [])
        if cycle:
            return cycle
    return None


def test_no_import_cycles() -> None:
    graph = {m: _imports(m) for m in MODULES}
    assert sum(map(len, graph.values())) > len(MODULES)  # the walk found the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_type_only_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_serve_without_the_server_extra_says_which_extra_to_install() -> None:
    """As after `pip install logd` alone: aiohttp cannot be imported."""
    code = (
        "import sys; sys.modules['aiohttp'] = None\nfrom logd.cli.main import main; main(['serve'])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == (
        "logd: logd serve needs the server extra (aiohttp is not installed); "
        "install it with: pip install 'logd[server]'\n"
    )
