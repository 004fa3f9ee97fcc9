"""The documentation's commands run and its links lead somewhere.

Runnable examples: a fenced ``sh`` block in README.md or docs/*.md directly preceded by the
line ``<!-- doc-test -->`` is run by bash (``-euo pipefail``) from the repository's root, with
this venv's commands first on PATH and HOME and TMPDIR in a temporary directory, and must
exit 0. Mark only blocks that need no network, no root-only side effects and nothing but this
checkout (docs/quickstart.md, docs/migrating.md have some). Links: every relative link in
those files must name an existing file, and an anchor must name a heading of that file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = "<!-- doc-test -->"
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    runnable: bool

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Fenced code blocks, with whether the line before the fence is the marker."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i].strip())
        if not opening:
            i += 1
            continue
        fence, lang = opening.group(1), opening.group(2)
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        runnable = i > 0 and lines[i - 1].strip() == MARKER
        code = textwrap.dedent("\n".join(lines[i + 1:end]))  # a block in a list is indented
        found.append(Block(page, i + 1, lang, code, runnable))
        i = end + 1
    return found


def prose(page: Path) -> str:
    """The page without its fenced blocks and inline code (links there are examples)."""
    kept, inside = [], None
    for line in page.read_text().splitlines():
        opening = FENCE.match(line.strip())
        if inside is None and opening:
            inside = opening.group(1)
        elif inside is not None and line.strip().startswith(inside):
            inside = None
        elif inside is None:
            kept.append(re.sub(r"`[^`]*`", "", line))
    return "\n".join(kept)


RUNNABLE = [b for page in PAGES for b in blocks(page) if b.runnable]


def test_marked_blocks_are_shell_and_exist() -> None:
    for page in PAGES:
        text = page.read_text().splitlines()
        for n, line in enumerate(text):
            if line.strip() == MARKER:
                assert n + 1 < len(text) and FENCE.match(text[n + 1].strip()), \
                    f"{page.name}:{n + 1}: {MARKER} must stand right before a fence"
    assert all(b.lang == "sh" for b in RUNNABLE), [b.name for b in RUNNABLE if b.lang != "sh"]
    pages = {b.page.name for b in RUNNABLE}
    assert {"quickstart.md", "migrating.md"} <= pages, pages


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.name)
def test_runnable_block_exits_0(block: Block, tmp_path: Path) -> None:
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
           "HOME": str(tmp_path), "TMPDIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
    env.pop("TSSH_CONFIG", None)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, (
        f"{block.name} exited {done.returncode}\n--- block\n{block.code}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")


def test_a_failing_block_is_noticed(tmp_path: Path) -> None:
    """The runner above is strict: a failure in the middle of a block fails it."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", "false | cat\ntrue"],
                          cwd=tmp_path, capture_output=True, timeout=10)
    assert done.returncode != 0


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", prose(page), re.MULTILINE)}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]  # http:, https:, mailto:


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: " + "; ".join(broken)


def test_link_check_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n[ok](#title) [gone](missing.md) [bad](#nowhere)\n"
                    "```sh\n[not a link](in-code.md)\n```\n")
    targets = relative_links(page)
    assert targets == ["#title", "missing.md", "#nowhere"]
    assert anchors(page) == {"title"}


CITED = re.compile(r"`((?:tests|tssh|recorder|deploy|benchmarks)/[\w./-]*)`")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_cited_repository_paths_exist(page: Path) -> None:
    """A page that says "checked by tests/x.py" or "the code: tssh/y.py" names real files."""
    missing = [p for p in CITED.findall(page.read_text()) if not (ROOT / p).exists()]
    assert not missing, f"{page.name} cites {missing}"
