"""The login decision looks up local accounts (NSS: files, but also LDAP or sssd, which can
take seconds); it must not stall the event loop every other session's I/O runs on."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import ALICE_IP, write_identity_files
from tssh.config import Config
from tssh.identity.netmap import NetmapResolver
from tssh.policy import parse_policy
from tssh.policy.decider import FileDecider
from tssh.server import daemon as daemon_module
from tssh.server.account import Account, AccountExpiredError
from tssh.server.auth import TsshServer
from tssh.server.daemon import Daemon
from tssh.server.session import ConnectionContext

SLOW_LOOKUP = 0.5


async def test_admit_runs_account_lookups_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netmap, policy = write_identity_files(tmp_path)
    config = Config(identity="netmap", netmap=netmap, policy=policy, state_dir=tmp_path / "s")
    resolver = NetmapResolver.from_file(netmap)
    daemon = Daemon(config, resolver)
    await daemon._policy.start()
    daemon._decider = daemon._policy.current()
    daemon._self_node = await resolver.self_node()
    real_decide = daemon_module.decide

    def slow_decide(*args: object, **kwargs: object) -> object:
        time.sleep(SLOW_LOOKUP)  # what a slow directory service does to getpwnam
        return real_decide(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon_module, "decide", slow_decide)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0.05)
        peer = await resolver.whois(ALICE_IP)
        admission = await daemon.admit(peer, ALICE_IP, "root")
        await asyncio.sleep(0.05)  # a tick after the decision, so a stall would show
    finally:
        task.cancel()
        await daemon._policy.close()
        await resolver.close()
    assert admission.accepted, admission.message
    longest_stall = max(b - a for a, b in itertools.pairwise(ticks))
    assert longest_stall < SLOW_LOOKUP / 2


async def test_policy_change_during_a_decision_is_not_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection still deciding is not yet among those a policy change re-checks, so a
    decision made with a policy replaced meanwhile must be made again with the new one."""
    netmap, policy = write_identity_files(tmp_path)
    config = Config(identity="netmap", netmap=netmap, policy=policy, state_dir=tmp_path / "s")
    resolver = NetmapResolver.from_file(netmap)
    daemon = Daemon(config, resolver)
    await daemon._policy.start()
    old = daemon._policy.current()
    new = FileDecider(parse_policy('{"ssh": []}'))
    daemon._decider = old
    daemon._self_node = await resolver.self_node()
    real_decide = daemon_module.decide
    calls: list[object] = []

    def decide_while_policy_changes(decider: object, *args: object, **kwargs: object) -> object:
        calls.append(decider)
        if decider is old:
            daemon._decider = new  # what _policy_changed does on the event loop
        return real_decide(decider, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon_module, "decide", decide_while_policy_changes)
    try:
        peer = await resolver.whois(ALICE_IP)
        admission = await daemon.admit(peer, ALICE_IP, "root")
    finally:
        await daemon._policy.close()
        await resolver.close()
    assert calls == [old, new]
    assert not admission.accepted


async def test_account_expiry_is_judged_at_login_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A policy change decides live connections again (at_login=False): an account that
    expired since must not end them, as sshd never ends them either."""
    netmap, policy = write_identity_files(tmp_path)
    config = Config(identity="netmap", netmap=netmap, policy=policy, state_dir=tmp_path / "s")
    resolver = NetmapResolver.from_file(netmap)
    daemon = Daemon(config, resolver)
    await daemon._policy.start()
    daemon._decider = daemon._policy.current()
    daemon._self_node = await resolver.self_node()
    checked: list[str] = []

    def expired(account: Account) -> None:
        checked.append(account.name)
        raise AccountExpiredError(f'account "{account.name}" has expired on this node')

    monkeypatch.setattr(daemon_module, "check_account_current", expired)
    try:
        peer = await resolver.whois(ALICE_IP)
        at_login = await daemon.admit(peer, ALICE_IP, "root")
        again = await daemon.admit(peer, ALICE_IP, "root", at_login=False)
    finally:
        await daemon._policy.close()
        await resolver.close()
    assert at_login.message == 'account "root" has expired on this node'
    assert again.accepted
    assert checked == ["root"]


async def test_a_session_opened_while_a_policy_change_is_checked_waits_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live connections are re-checked in the background after a policy change (account
    lookups may be slow); a session opened meanwhile must not start under its connection's
    old decision, or a rule that now requires recording would let it run unrecorded."""
    netmap, policy = write_identity_files(tmp_path)
    config = Config(identity="netmap", netmap=netmap, policy=policy, state_dir=tmp_path / "s")
    resolver = NetmapResolver.from_file(netmap)
    daemon = Daemon(config, resolver)
    await daemon._policy.start()
    daemon._decider = daemon._policy.current()
    daemon._self_node = await resolver.self_node()
    recorded = FileDecider(parse_policy(
        '{"tagOwners": {"tag:prod": ["alice@example.com"]}, "ssh": [{"action": "accept",'
        ' "src": ["alice@example.com"], "dst": ["tag:prod"], "users": ["root"],'
        ' "recorder": ["127.0.0.99:80"], "enforceRecorder": true}]}'))
    try:
        peer = await resolver.whois(ALICE_IP)
        assert peer is not None
        admission = await daemon.admit(peer, ALICE_IP, "root")
        assert admission.account is not None and admission.recording is None
        server = TsshServer(daemon)
        server.context = ConnectionContext(
            conn_id="c1", login="root", account=admission.account, peer=peer,
            peer_ip=ALICE_IP, peer_port=50000, local_ip="127.0.0.10", local_port=22)
        daemon._connections.add(server)
        real_decide = daemon_module.decide

        def slow_decide(*args: object, **kwargs: object) -> object:
            time.sleep(SLOW_LOOKUP)
            return real_decide(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(daemon_module, "decide", slow_decide)
        started = time.monotonic()
        daemon._policy_changed(recorded)
        ctx = await server.current_context()  # what a session does before its process
        waited = time.monotonic() - started
    finally:
        await daemon._recorders.close()
        await daemon._policy.close()
        await resolver.close()
    assert ctx is not None and ctx.recording is not None
    assert ctx.recording.rule.enforce
    assert waited >= SLOW_LOOKUP * 0.9
