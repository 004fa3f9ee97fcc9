"""The package rules of docs/architecture.md, checked on the source: a change that breaks one
fails here, not in a reviewer's head. Every ``import`` counts, including those inside
functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Modules that do I/O or run an event loop: the pure cores import none of them.
IO_MODULES = {
    "asyncio", "socket", "subprocess", "threading", "multiprocessing", "selectors", "shutil",
    "tempfile", "signal", "http", "urllib.request", "aiofiles", "asyncssh", "httpx", "boto3",
    "botocore", "asyncpg", "hypercorn", "uvloop", "fastapi", "starlette",
}
PURE_RECORDING = ["asciicast", "wire", "model", "sink", "worker_protocol", "targets"]
PURE_AUDIT = ["entry", "transfer", "sftp", "scp", "view"]
# Modules of tssh that a pure core may use: the pure cores themselves, and these.
PURE_TSSH = {"tssh.errors", "tssh.hujson", "tssh.identity.base", "tssh.identity.address",
             *(f"tssh.recording.{name}" for name in PURE_RECORDING),
             *(f"tssh.audit.{name}" for name in PURE_AUDIT)}


def imports(path: Path, text: str | None = None) -> set[str]:
    """Every module ``path`` (or ``text`` as if it were at ``path``) imports, as absolute
    dotted names."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    source = path.read_text() if text is None else text
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def sources(*parts: str) -> list[Path]:
    target = ROOT.joinpath(*parts)
    return sorted(target.rglob("*.py")) if target.is_dir() else [target]


def pure_violations(path: Path, text: str | None = None) -> list[str]:
    bad = []
    for name in imports(path, text):
        top_tssh = name.startswith("tssh.") and not name.startswith("tssh.policy")
        if within(name, IO_MODULES) or within(name, {"recorder"}) \
                or (top_tssh and not within(name, PURE_TSSH)):
            bad.append(name)
    return sorted(bad)


PURE = [*sources("tssh", "policy"), ROOT / "tssh/hujson.py",
        *(ROOT / f"tssh/recording/{name}.py" for name in PURE_RECORDING),
        *(ROOT / f"tssh/audit/{name}.py" for name in PURE_AUDIT)]


@pytest.mark.parametrize("path", PURE, ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_cores_do_no_io(path: Path) -> None:
    assert pure_violations(path) == [], f"{path.relative_to(ROOT)} imports I/O"


@pytest.mark.parametrize("path", sources("recorder"), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_recorder_does_not_reach_into_the_daemon(path: Path) -> None:
    assert sorted(n for n in imports(path) if within(n, {"tssh.server"})) == []


@pytest.mark.parametrize("path", [p for p in sources("tssh") if "cli" not in p.parts],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_command_line_knows_the_recorder(path: Path) -> None:
    """``tssh demo`` runs a recorder; nothing else in tssh may depend on the recorder node."""
    assert sorted(n for n in imports(path) if within(n, {"recorder"})) == []


def test_the_check_sees_a_violation() -> None:
    """The rule above can fail: I/O imports in a policy module are caught, relative ones too."""
    text = "import asyncio\nfrom ..server import daemon\nfrom . import model\n" \
        "def f():\n    import httpx\n"
    assert pure_violations(ROOT / "tssh/policy/probe.py", text) == [
        "asyncio", "httpx", "tssh.server", "tssh.server.daemon"]
