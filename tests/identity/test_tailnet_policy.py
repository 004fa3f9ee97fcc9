"""Following tailscaled's SSH policy over watch-ipn-bus, against a fake tailscaled."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest

from tests.identity.localapi import ALICE, BOB, TAGGED_DEVICES, Tailnet, node, serve_localapi
from tests.polling import wait_until
from tssh.errors import IdentityError
from tssh.identity.tailnet_policy import (
    WATCH_MASK,
    Backoff,
    Refetch,
    TailnetPolicy,
    read_notify,
    watch_tailnet_policy,
)

SERVER = node(101, "nSRV1CNTRL", "server.example.ts.net.", ["100.64.0.10"], TAGGED_DEVICES,
              tags=["tag:prod"])
LAPTOP = node(102, "nLAP1CNTRL", "laptop.example.ts.net.", ["100.64.0.2"], ALICE)
PHONE = node(103, "nPHN1CNTRL", "phone.example.ts.net.", ["100.64.0.3"], BOB)
FAST = Backoff(attempts=3, first=0.01, cap=0.05)


def policy_for(login: str, local: str = "=") -> dict[str, Any]:
    """A tailcfg.SSHPolicy as the control plane compiles an accept rule for one user."""
    return {"rules": [{"principals": [{"userLogin": login}], "sshUsers": {"*": local, "root": ""},
                       "action": {"accept": True, "allowAgentForwarding": True}}]}


def test_mask_is_initial_netmap_and_rate_limit() -> None:
    assert WATCH_MASK == 8 | 256


def test_read_notify() -> None:
    pol = policy_for("alice@example.com")
    assert read_notify({"NetMap": {"SSHPolicy": pol}}, initial=True) == \
        TailnetPolicy(ssh_policy=pol, has_netmap=True)
    assert read_notify({"NetMap": {"SSHPolicy": None}}, initial=False) == \
        TailnetPolicy(ssh_policy=None, has_netmap=True)
    assert read_notify({"NetMap": None}, initial=True) == \
        TailnetPolicy(ssh_policy=None, has_netmap=False)
    assert read_notify({"NetMap": None, "SelfChange": {"ID": 1}}, initial=False) == Refetch()
    assert read_notify({"NetMap": None, "Engine": {"RBytes": 1}}, initial=False) is None
    for bad in ([], "x", {"NetMap": []}):
        with pytest.raises(ValueError):
            read_notify(bad, initial=False)


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[Tailnet, Path]]:
    net = Tailnet(nodes=[(SERVER, TAGGED_DEVICES), (LAPTOP, ALICE), (PHONE, BOB)],
                  ssh_policy=policy_for("alice@example.com"))
    sock = tmp_path / "tailscaled.sock"
    async with serve_localapi(sock, net):
        yield net, sock


async def next_policy(stream: AsyncIterator[TailnetPolicy]) -> TailnetPolicy:
    return await asyncio.wait_for(anext(stream), 5)


async def wait_watchers(net: Tailnet, count: int) -> None:
    for _ in range(500):  # bounded: 5 s
        if len(net.watchers) == count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(net.watchers)} watchers, expected {count}")


@pytest.mark.parametrize("legacy", [False, True], ids=["selfchange", "legacy-netmap"])
async def test_policy_change_yields_new_policy(fake: tuple[Tailnet, Path], legacy: bool) -> None:
    net, sock = fake
    net.legacy_netmap_notify = legacy
    async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
        first = await next_policy(stream)
        assert first == TailnetPolicy(policy_for("alice@example.com"), has_netmap=True)
        await wait_watchers(net, 1)
        net.ssh_policy = policy_for("bob@example.com", "bob")
        net.publish_netmap()
        second = await next_policy(stream)
        assert second.ssh_policy == policy_for("bob@example.com", "bob")
    watches = [r for r in net.requests if r.startswith("/localapi/v0/watch-ipn-bus")]
    assert all(r.endswith(f"?mask={WATCH_MASK}") for r in watches)
    # Newer tailscaled sends only SelfChange: the stream is reopened to read the netmap again.
    assert len(watches) == (1 if legacy else 2)


def watch_requests(net: Tailnet) -> int:
    return len([r for r in net.requests if r.startswith("/localapi/v0/watch-ipn-bus")])


async def test_unchanged_netmap_yields_nothing(fake: tuple[Tailnet, Path]) -> None:
    net, sock = fake
    seen: asyncio.Queue[TailnetPolicy] = asyncio.Queue()

    async def collect() -> None:
        async for item in watch_tailnet_policy(sock, backoff=FAST):
            seen.put_nowait(item)

    task = asyncio.create_task(collect())
    try:
        assert (await asyncio.wait_for(seen.get(), 5)).ssh_policy == \
            policy_for("alice@example.com")
        for i in range(3):  # netmap updates that leave the SSH policy alone
            await wait_watchers(net, 1)
            net.publish_netmap()
            await wait_until(lambda i=i: watch_requests(net) == 2 + i, 5, what="a reopened stream")
        await wait_watchers(net, 1)
        assert seen.empty()
        net.ssh_policy = None
        net.publish_netmap()
        assert await asyncio.wait_for(seen.get(), 5) == TailnetPolicy(None, has_netmap=True)
        assert seen.empty() and watch_requests(net) == 5
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_no_netmap_yet_then_netmap(fake: tuple[Tailnet, Path]) -> None:
    net, sock = fake
    net.has_netmap = False
    async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
        assert await next_policy(stream) == TailnetPolicy(None, has_netmap=False)
        net.has_netmap = True
        await wait_watchers(net, 1)
        net.publish_netmap()
        assert (await next_policy(stream)).ssh_policy == policy_for("alice@example.com")


async def test_reconnects_after_tailscaled_drops_the_stream(fake: tuple[Tailnet, Path]) -> None:
    net, sock = fake
    async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
        await next_policy(stream)
        await wait_watchers(net, 1)
        net.ssh_policy = policy_for("bob@example.com")
        net.publish(None)  # tailscaled restarts; the policy changed meanwhile
        assert (await next_policy(stream)).ssh_policy == policy_for("bob@example.com")
        await wait_watchers(net, 1)
        net.publish(None)  # reconnect with the same policy: nothing new to say
        await wait_watchers(net, 1)
        net.ssh_policy = policy_for("carol@example.com")
        net.publish_netmap()
        assert (await next_policy(stream)).ssh_policy == policy_for("carol@example.com")


async def test_missing_socket_gives_up_with_clear_error(tmp_path: Path) -> None:
    sock = tmp_path / "nope.sock"
    with pytest.raises(IdentityError, match=r"tailscaled at .*nope\.sock.*after 3 attempts"):
        async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
            await next_policy(stream)


async def test_refused_watch_fails_at_once(fake: tuple[Tailnet, Path]) -> None:
    net, sock = fake
    net.watch_status = 403
    with pytest.raises(IdentityError, match=r"answered 403 .*access denied.*operator"):
        async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
            await next_policy(stream)
    assert len([r for r in net.requests if "watch-ipn-bus" in r]) == 1


async def test_large_netmap(tmp_path: Path) -> None:
    """A netmap of a few thousand nodes is one multi-megabyte line; it must still be read."""
    nodes = [(SERVER, TAGGED_DEVICES)] + [
        (node(1000 + i, f"nN{i}CNTRL", f"n{i}.example.ts.net.",
              [f"100.65.{i // 250}.{i % 250 + 1}"], ALICE), ALICE) for i in range(4000)]
    net = Tailnet(nodes=nodes, ssh_policy=policy_for("alice@example.com"))
    sock = tmp_path / "tailscaled.sock"
    async with serve_localapi(sock, net):
        assert len(json.dumps(net.netmap())) > 2_000_000
        async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
            assert (await next_policy(stream)).ssh_policy == policy_for("alice@example.com")


async def test_server_errors_are_retried_then_reported(fake: tuple[Tailnet, Path]) -> None:
    net, sock = fake
    net.watch_status = 503
    with pytest.raises(IdentityError, match=r"answered 503.*after 3 attempts"):
        async with aclosing(watch_tailnet_policy(sock, backoff=FAST)) as stream:
            await next_policy(stream)
    assert len([r for r in net.requests if "watch-ipn-bus" in r]) == 3
