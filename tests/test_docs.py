"""The docs work in a clone: every relative link of every tracked Markdown file resolves
(its `#anchor` too), none points at ../shared, and the README's Python examples run as
written against a real `logd serve`.

A README ```python block preceded by `<!-- not run: <reason> -->` is skipped with that
reason (it needs AWS, say); every other one must exit 0.
"""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from support import LogdProcess, start_logd, wait_for

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_NOT_RUN = re.compile(r"^<!--\s*not run:\s*(.+?)\s*-->$")


@functools.cache
def tracked_files() -> frozenset[Path] | None:
    """Every file git tracks (what a clone has), or None outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return frozenset(ROOT / name for name in out.decode().split("\0") if name)


def tracked_markdown() -> list[Path]:
    """Every tracked *.md file; outside a git checkout, every *.md file but those under
    hidden, build and generated directories."""
    tracked = tracked_files()
    if tracked is not None:
        return sorted(p for p in tracked if p.suffix == ".md")
    skip = {"build", "node_modules", "cdk.out"}
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not any(part.startswith(".") or part in skip for part in p.relative_to(ROOT).parts)
    )


def in_a_clone(path: Path) -> bool:
    """Whether a clone has `path`: it exists and is tracked, or is a directory holding a
    tracked file (outside a git checkout: it exists)."""
    tracked = tracked_files()
    if not path.exists() or tracked is None:
        return path.exists()
    return path in tracked or (path.is_dir() and any(p.is_relative_to(path) for p in tracked))


def outside_fences(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if match is None:
            if fence is None:
                lines.append((number, line))
        elif fence is None:
            fence = match.group(1)
        elif match.group(1) == fence:
            fence = None
    return lines


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with inline code removed."""
    return [(number, _INLINE_CODE.sub("", line)) for number, line in outside_fences(text)]


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition."""
    found: list[tuple[int, str]] = []
    for number, line in prose_lines(text):
        found += [(number, m.group(1)) for m in _LINK.finditer(line)]
        ref = _REF_DEF.match(line)
        if ref:
            found.append((number, ref.group(1)))
    return found


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (letters, digits,
    `-`, `_` and spaces stay), spaces turned into hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every `#anchor` a Markdown file offers: heading slugs (repeats get -1, -2 ...) and
    HTML id/name attributes."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    text = path.read_text(encoding="utf-8")
    for _, line in prose_lines(text):
        found.update(_HTML_ID.findall(line))
    for _, line in outside_fences(text):
        heading = _HEADING.match(line)
        if heading is None:
            continue
        slug = github_slug(heading.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(
    path: Path, root: Path = ROOT, exists: Callable[[Path], bool] = in_a_clone
) -> list[str]:
    """What is wrong with the relative links of one Markdown file under `root`, one line
    each: a target that a clone lacks (`exists`), is outside `root`, or lacks the `#anchor`."""
    problems: list[str] = []
    where = path.relative_to(root)
    for number, target in links(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target) or target.startswith("//"):
            continue  # http(s):, mailto: ... are not checked offline
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.is_relative_to(root):
            problems.append(f"{where}:{number}: {target} points outside the repository")
        elif not exists(dest):
            problems.append(f"{where}:{number}: {target} does not exist in a clone")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
            problems.append(f"{where}:{number}: {target}: no heading with that anchor")
    return problems


def readme_python_blocks() -> list[tuple[int, str, str | None]]:
    """(first line, code, reason not run or None) of each ```python block of the README."""
    blocks: list[tuple[int, str, str | None]] = []
    lines = README.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```python":
            before = [line.strip() for line in lines[:i] if line.strip()]
            not_run = _NOT_RUN.match(before[-1]) if before else None
            end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
            blocks.append((i + 2, "\n".join(lines[i + 1 : end]) + "\n", not_run and not_run[1]))
            i = end
        i += 1
    return blocks


def _block_params() -> list[object]:
    params: list[object] = []
    for line, code, reason in readme_python_blocks():
        marks = [pytest.mark.skip(reason=f"README.md:{line} not run: {reason}")] if reason else []
        params.append(pytest.param(code, id=f"README.md:{line}", marks=marks))
    return params


# --- links -------------------------------------------------------------------------------


def test_the_docs_are_found() -> None:
    docs = tracked_markdown()
    assert README in docs
    assert len(docs) > 1, docs


@pytest.mark.parametrize("path", tracked_markdown(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


@pytest.mark.parametrize("path", tracked_markdown(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_doc_mentions_the_shared_directory(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{path.relative_to(ROOT)} refers to ../shared"


def test_link_checker_catches_what_it_should(tmp_path: Path) -> None:
    """The checker itself: a missing file, a missing anchor and a link out of the tree are
    reported; links in code, absolute URLs, directories and good anchors are not."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "b.md").write_text("# `GET /tail` — live tail\n## Notes\n## Notes\n")
    (tmp_path / "a.md").write_text(
        "# Top\n"
        "[ok](docs/b.md#get-tail--live-tail) [ok](docs/b.md#notes-1) [ok](#top) [ok](docs/)\n"
        "[ok](https://example.com/missing.md) `[code](missing.md)`\n"
        "```\n[fenced](missing.md)\n```\n"
        "[bad](missing.md) [bad](docs/b.md#nowhere) [bad](../outside.md)\n"
        "[ref]: docs/gone.md\n"
    )
    assert broken_links(tmp_path / "a.md", root=tmp_path, exists=Path.exists) == [
        "a.md:7: missing.md does not exist in a clone",
        "a.md:7: docs/b.md#nowhere: no heading with that anchor",
        "a.md:7: ../outside.md points outside the repository",
        "a.md:8: docs/gone.md does not exist in a clone",
    ]
    assert github_slug("On AWS: `-c nodes=N`") == "on-aws--c-nodesn"


# --- README examples ---------------------------------------------------------------------


def test_readme_has_examples_that_run() -> None:
    """Some blocks run, and every `not run` marker stands right before a Python block (so
    the count of skipped examples is the count of markers)."""
    blocks = readme_python_blocks()
    assert any(reason is None for _, _, reason in blocks), "no README example is run"
    markers = [
        line
        for line in README.read_text(encoding="utf-8").splitlines()
        if _NOT_RUN.match(line.strip())
    ]
    assert len(markers) == sum(reason is not None for _, _, reason in blocks), markers


@pytest.mark.functional
@pytest.mark.parametrize("code", _block_params())
def test_readme_example_runs(code: str, tmp_path: Path) -> None:
    """The block runs in a fresh interpreter with what a user sets: the server's address
    and the secrets in the environment. It must exit 0 and reach the server (the README's
    examples write logs), with no frame refused."""
    # A generous max_age: on a loaded CI machine a frame may wait in the socket for a while.
    logd = start_logd(tmp_path, "--max-age", "30")
    try:
        home = tmp_path / "example-home"
        home.mkdir()
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(home),
            "LOGD_HOST": logd.http_url,
            "LOGD_UDP_PORT": str(logd.udp_addr[1]),
            "LOGD_READ_SECRET": logd.read_secret,
            "LOGD_WRITE_SECRET": logd.write_secret,
        }
        result = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"example failed:\n{code}\n{result.stderr}"
        udp = wait_for(lambda: _received(logd), timeout=5)
        assert not any(udp["rejected"].values()), udp["rejected"]
        assert udp["accepted"] == udp["received"], udp
    finally:
        logd.stop()


def _received(logd: LogdProcess) -> dict[str, Any] | None:
    """/info's udp part once the server has received a datagram, else None."""
    udp: dict[str, Any] = logd.info()["udp"]
    return udp if udp["received"] else None
