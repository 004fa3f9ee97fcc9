"""Policy sources: a polled file and the tailnet's compiled policy, behind one interface."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.identity.localapi import ALICE, TAGGED_DEVICES, Tailnet, node, serve_localapi
from tests.polling import wait_until
from tssh.cli.status import render_status
from tssh.config import Config
from tssh.errors import ConfigError, IdentityError, PolicyError
from tssh.identity.base import Peer
from tssh.identity.tailnet_policy import Backoff
from tssh.policy import Policy, load_policy
from tssh.policy.compiled import parse_compiled_policy
from tssh.policy.decider import CompiledDecider, Decider
from tssh.server import policy_source
from tssh.server.policy_source import (
    FilePolicySource,
    PolicySource,
    TailnetPolicySource,
    open_policy_source,
)

SERVER = Peer("server", "nSRV", ("100.64.0.10",), tags=("tag:prod",))
LAPTOP = Peer("laptop", "nLAP", ("100.64.0.2",), user="alice@example.com")
PHONE = Peer("phone", "nPHN", ("100.64.0.3",), user="bob@example.com")
FAST = Backoff(attempts=2, first=0.01, cap=0.02)

POLICY = """{
  // alice may log in to the prod server as any non-root user
  "tagOwners": {"tag:prod": ["alice@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["%s"], "dst": ["tag:prod"], "users": ["autogroup:nonroot"]},
  ],
}
"""


def compiled_for(login: str) -> dict[str, Any]:
    return {"rules": [{"principals": [{"userLogin": login}], "sshUsers": {"*": "=", "root": ""},
                       "action": {"accept": True}}]}


def may_login(decider: Decider, src: Peer, login: str = "deploy") -> bool:
    return decider.decide(src, src.addresses[0], SERVER, login).action == "accept"


# --- deciders -------------------------------------------------------------------------------

def test_compiled_decider_compares_canonical_addresses() -> None:
    policy = parse_compiled_policy({"rules": [{
        "principals": [{"nodeIP": "100.64.0.2"}], "sshUsers": {"*": "="},
        "action": {"accept": True, "recorders": ["100.64.0.20:80"]}}]})
    decider = CompiledDecider(policy)
    mapped = decider.decide(LAPTOP, "::ffff:100.64.0.2", SERVER, "alice")
    assert (mapped.action, mapped.local_user, mapped.recorders) == \
        ("accept", "alice", ("100.64.0.20:80",))
    assert decider.decide(LAPTOP, "100.64.0.3", SERVER, "alice").action == "reject"
    assert decider.recorder_form == "address" and decider.rule_count == 1


def test_compiled_decider_clock_expires_rules() -> None:
    policy = parse_compiled_policy({"rules": [{
        "principals": [{"any": True}], "sshUsers": {"*": "u"}, "action": {"accept": True},
        "ruleExpires": "2026-06-01T00:00:00Z"}]})
    before = CompiledDecider(policy, clock=lambda: datetime(2026, 5, 31, tzinfo=UTC))
    after = CompiledDecider(policy, clock=lambda: datetime(2026, 6, 2, tzinfo=UTC))
    assert may_login(before, LAPTOP) and not may_login(after, LAPTOP)


# --- file source ----------------------------------------------------------------------------

def write(path: Path, text: str) -> None:
    """Replace the file's contents and make sure its signature changes even on coarse clocks."""
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def test_file_source_keeps_last_good_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.hujson"
    write(path, POLICY % "alice@example.com")
    source = FilePolicySource(path, clock=lambda: 1000.0)
    await source.start()
    assert may_login(source.current(), LAPTOP) and not may_login(source.current(), PHONE)
    assert source.current().recorder_form == "selector"
    assert source.status().to_json() == {"source": "file", "location": str(path), "rules": 1,
                                         "loadedAt": 1000.0, "error": None}
    assert await source.reload() is False  # unchanged

    write(path, (POLICY % "bob@example.com").replace('"accept"', '"acept"'))
    assert await source.reload() is False
    error = source.status().error
    assert error is not None and error.startswith(f"{path}:5:") and "acept" in error
    assert may_login(source.current(), LAPTOP)  # the last good policy is still in force

    write(path, POLICY % "bob@example.com")
    assert await source.reload() is True
    assert source.status().error is None
    assert may_login(source.current(), PHONE) and not may_login(source.current(), LAPTOP)


async def test_file_source_logs_a_broken_edit_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.hujson"
    write(path, POLICY % "alice@example.com")
    source = FilePolicySource(path)
    await source.start()
    broken = (POLICY % "bob@example.com").replace('"accept"', '"acept"')

    def refused() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]

    write(path, broken)
    assert await source.reload() is False
    assert len(refused()) == 1 and "acept" in refused()[0]
    path.chmod(0o600)  # an editor restoring the mode: the same broken contents, read again
    write(path, broken)  # or saving them again
    assert await source.reload() is False
    assert len(refused()) == 1
    write(path, broken.replace('"acept"', '"except"'))  # a different mistake
    assert await source.reload() is False
    assert len(refused()) == 2 and refused()[1] != refused()[0]
    write(path, POLICY % "bob@example.com")
    assert await source.reload() is True
    write(path, broken)  # broken again after a good one: said again
    assert await source.reload() is False
    assert len(refused()) == 3 and refused()[2] == refused()[0]


async def test_file_source_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.hujson"
    with pytest.raises(PolicyError, match="cannot read policy file"):
        await FilePolicySource(path).start()
    write(path, POLICY % "alice@example.com")
    source = FilePolicySource(path)
    await source.start()
    path.unlink()
    assert await source.reload() is False
    assert "cannot read policy file" in (source.status().error or "")
    assert may_login(source.current(), LAPTOP)


async def test_file_source_run_notifies_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.hujson"
    write(path, POLICY % "alice@example.com")
    source = FilePolicySource(path, poll_interval=0.01)
    await source.start()
    changes: asyncio.Queue[Decider] = asyncio.Queue()
    task = asyncio.create_task(source.run(changes.put_nowait))
    try:
        write(path, POLICY % "bob@example.com")
        changed = await asyncio.wait_for(changes.get(), 5)
        assert may_login(changed, PHONE) and changed is source.current()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task



async def test_file_source_concurrent_reloads_end_with_the_newest_policy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload that read an older version must not install it after a later reload installed
    the newer one (the file's signature would then say "up to date" and the stale policy
    would stay in force)."""
    path = tmp_path / "policy.hujson"
    write(path, POLICY % "alice@example.com")
    source = FilePolicySource(path)
    await source.start()
    first_read, release_first = threading.Event(), threading.Event()
    loads = 0

    def slow_first_load(p: Path) -> Policy:
        nonlocal loads
        loads += 1
        policy = load_policy(p)
        if loads == 1:
            first_read.set()
            release_first.wait(10)
        return policy

    monkeypatch.setattr(policy_source, "load_policy", slow_first_load)
    write(path, POLICY % "bob@example.com")
    first = asyncio.create_task(source.reload())
    assert await asyncio.to_thread(first_read.wait, 10)
    write(path, POLICY % "carol@example.com")  # the newest version: neither alice nor bob
    second = asyncio.create_task(source.reload())
    await asyncio.sleep(0.05)
    release_first.set()
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert not may_login(source.current(), PHONE) and not may_login(source.current(), LAPTOP)
    assert await source.reload() is False

# --- tailnet source -------------------------------------------------------------------------

@pytest.fixture
async def tailnet(tmp_path: Path) -> AsyncIterator[tuple[Tailnet, Path]]:
    srv = node(101, "nSRV", "server.example.ts.net.", ["100.64.0.10"], TAGGED_DEVICES,
               tags=["tag:prod"])
    lap = node(102, "nLAP", "laptop.example.ts.net.", ["100.64.0.2"], ALICE)
    net = Tailnet(nodes=[(srv, TAGGED_DEVICES), (lap, ALICE)],
                  ssh_policy=compiled_for("alice@example.com"), legacy_netmap_notify=True)
    sock = tmp_path / "tailscaled.sock"
    async with serve_localapi(sock, net):
        yield net, sock


async def wait_watchers(net: Tailnet) -> None:
    for _ in range(500):  # bounded: 5 s
        if net.watchers:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no watch-ipn-bus stream")


async def test_tailnet_source_follows_policy_changes(tailnet: tuple[Tailnet, Path]) -> None:
    net, sock = tailnet
    source: PolicySource = TailnetPolicySource(sock, backoff=FAST, clock=lambda: 7.0)
    await source.start()
    changes: asyncio.Queue[Decider] = asyncio.Queue()
    task = asyncio.create_task(source.run(changes.put_nowait))
    try:
        assert may_login(source.current(), LAPTOP) and not may_login(source.current(), PHONE)
        assert source.status().to_json() == {"source": "tailnet", "location": str(sock),
                                             "rules": 1, "loadedAt": 7.0, "error": None}
        await wait_watchers(net)
        net.ssh_policy = {"rules": "not a list"}  # a malformed update changes nothing
        net.publish_netmap()
        await wait_until(lambda: source.status().error, 5, what="the policy error")
        assert "SSHPolicy.rules must be a list" in (source.status().error or "")
        assert may_login(source.current(), LAPTOP) and changes.empty()

        net.ssh_policy = compiled_for("bob@example.com")
        net.publish_netmap()
        changed = await asyncio.wait_for(changes.get(), 5)
        assert may_login(changed, PHONE) and not may_login(changed, LAPTOP)
        assert source.status().error is None

        net.ssh_policy = None  # the control plane stops sending a policy: nobody gets in
        net.publish_netmap()
        changed = await asyncio.wait_for(changes.get(), 5)
        assert not may_login(changed, PHONE) and source.status().rules == 0
        assert "no SSH policy" in (source.status().error or "")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await source.close()


async def test_tailnet_source_reports_lost_tailscaled(tailnet: tuple[Tailnet, Path]) -> None:
    net, sock = tailnet
    source = TailnetPolicySource(sock, backoff=FAST)
    await source.start()
    await wait_watchers(net)
    net.watch_status = 403  # tailscaled comes back refusing us
    net.publish(None)
    with pytest.raises(IdentityError, match="403"):
        await asyncio.wait_for(source.run(lambda d: None), 5)
    assert "403" in (source.status().error or "")
    assert may_login(source.current(), LAPTOP)  # the last policy stays in force
    await source.close()


async def test_tailnet_source_without_tailscaled(tmp_path: Path) -> None:
    source = TailnetPolicySource(tmp_path / "nope.sock", backoff=FAST)
    with pytest.raises(IdentityError, match=r"nope\.sock"):
        await source.start()
    assert not may_login(source.current(), LAPTOP)


def test_open_policy_source(tmp_path: Path) -> None:
    path = tmp_path / "policy.hujson"
    assert isinstance(open_policy_source(Config(identity="tailscale", policy=path)),
                      FilePolicySource)
    assert isinstance(open_policy_source(Config(identity="tailscale")), TailnetPolicySource)
    with pytest.raises(ConfigError, match="needs a policy file"):
        open_policy_source(Config(identity="netmap", netmap=path))


async def test_status_renders_for_tssh_status(tmp_path: Path) -> None:
    path = tmp_path / "policy.hujson"
    write(path, POLICY % "alice@example.com")
    source = FilePolicySource(path, clock=lambda: 5.0)
    await source.start()
    write(path, "{")
    await source.reload()
    text = render_status({"policy": source.status().to_json()})
    lines = text.splitlines()
    assert lines[0] == "policy: file" and lines[2] == f"  location: {path}"
    assert lines[1].startswith(f"  error: {path}:1:2: ")


async def test_tailnet_source_times_out_without_a_netmap(tailnet: tuple[Tailnet, Path]) -> None:
    net, sock = tailnet
    net.watch_silent = True
    source = TailnetPolicySource(sock, backoff=FAST, first_timeout=0.2)
    with pytest.raises(IdentityError, match=r"sent no network map within 0\.2s"):
        await source.start()
    await source.close()
    assert not may_login(source.current(), LAPTOP)
