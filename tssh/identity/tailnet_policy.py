"""The SSH policy tailscaled received from its control plane, followed as the netmap changes.

tailscaled publishes its state on the IPN bus: ``GET /localapi/v0/watch-ipn-bus?mask=N``
streams one JSON ``ipn.Notify`` object per line. With the ``NotifyInitialNetMap`` bit the first
object carries the current ``NetMap``, whose ``SSHPolicy`` is the policy the control plane
compiled for this node (``null`` when it sent none). After that, tailscaled versions differ:
older ones (and Windows) put the whole ``NetMap`` in every netmap notification; newer ones send
only ``SelfChange`` (the self node) as a "new netmap" signal and expect watchers to fetch again.
:func:`watch_tailnet_policy` handles both: a later ``NetMap`` is read directly, a ``SelfChange``
without one reopens the stream, whose first object is again a full netmap. Nothing is lost in
the reopen: tailscaled snapshots the netmap and registers the watcher atomically.

The policy is passed on as the raw JSON value; ``tssh.policy.compiled`` parses it (the policy
package depends on identity, not the other way round). :func:`read_notify` is the pure part.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tssh.errors import IdentityError
from tssh.identity.tailscale import LOCALAPI_HOST

log = logging.getLogger(__name__)

# ipn.NotifyWatchOpt bits (ipn/backend.go): the first message holds the current NetMap, and
# tailscaled coalesces bursts of netmap updates (big tailnets send many) to one every few s.
NOTIFY_INITIAL_NETMAP = 1 << 3
NOTIFY_RATE_LIMIT = 1 << 8
WATCH_MASK = NOTIFY_INITIAL_NETMAP | NOTIFY_RATE_LIMIT
WATCH_PATH = "/localapi/v0/watch-ipn-bus"


@dataclass(frozen=True)
class TailnetPolicy:
    """One SSH policy as tailscaled holds it.

    ``ssh_policy`` is the JSON value of the netmap's ``SSHPolicy`` (a ``tailcfg.SSHPolicy``
    object), or None when tailscaled has no netmap yet or the control plane sent no policy;
    either way nobody may log in.
    """

    ssh_policy: Any
    has_netmap: bool


@dataclass(frozen=True)
class Refetch:
    """The netmap changed but this message does not carry it: read it again."""


def read_notify(notify: Any, *, initial: bool) -> TailnetPolicy | Refetch | None:
    """What one ``ipn.Notify`` says about the SSH policy (``initial``: first of its stream).

    Every Notify has a ``NetMap`` key (Go omits nothing there), ``null`` unless it carries one,
    so only the first message's ``null`` means "no netmap".
    """
    if not isinstance(notify, dict):
        raise ValueError("a Notify must be a JSON object")
    netmap = notify.get("NetMap")
    if isinstance(netmap, dict):
        return TailnetPolicy(ssh_policy=netmap.get("SSHPolicy"), has_netmap=True)
    if netmap is not None:
        raise ValueError("Notify.NetMap must be an object or null")
    if initial:
        return TailnetPolicy(ssh_policy=None, has_netmap=False)
    if notify.get("SelfChange") is not None:
        return Refetch()
    return None


class _Transient(Exception):
    """The stream broke in a way a reconnect may fix (tailscaled restarting, socket gone)."""


@dataclass(frozen=True)
class Backoff:
    """Reconnect schedule: ``attempts`` tries in a row at most, sleeping ``first`` doubling up to
    ``cap`` seconds between them. A message received resets the count."""

    attempts: int = 8
    first: float = 0.5
    cap: float = 10.0

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.first * 2 ** (failures - 1)))


DEFAULT_BACKOFF = Backoff()  # about 35 s of retries before giving up


async def watch_tailnet_policy(
    socket_path: Path | str, *, backoff: Backoff = DEFAULT_BACKOFF, connect_timeout: float = 5.0,
) -> AsyncGenerator[TailnetPolicy, None]:
    """Yield tailscaled's SSH policy now, then each time it changes, until cancelled.

    A broken stream is reopened after a pause; after ``backoff.attempts`` failures in a row,
    or at once when tailscaled refuses the request (no permission, LocalAPI too old), raises
    IdentityError saying why.
    """
    socket = Path(socket_path)
    timeout = httpx.Timeout(connect_timeout, read=None)  # the stream is idle between changes
    last: TailnetPolicy | None = None
    failures = 0
    async with httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(uds=str(socket)),
        base_url=f"http://{LOCALAPI_HOST}", timeout=timeout,
    ) as client:
        while True:
            try:
                async with aclosing(_one_stream(client, socket)) as stream:
                    async for item in stream:
                        failures = 0
                        if item != last:
                            last = item
                            yield item
                continue  # a Refetch ended the stream: reopen at once
            except _Transient as e:
                failures += 1
                if failures >= backoff.attempts:
                    raise IdentityError(
                        f"cannot follow the SSH policy of tailscaled at {socket}: {e} (gave up"
                        f" after {failures} attempts; is tailscaled running, and may this user"
                        " read its socket?)"
                    ) from None
                delay = backoff.delay(failures)
                log.warning("tailscaled policy stream: %s; reconnecting in %.1fs", e, delay)
                await asyncio.sleep(delay)


async def _one_stream(
    client: httpx.AsyncClient, socket: Path,
) -> AsyncGenerator[TailnetPolicy, None]:
    """Policies from one watch-ipn-bus stream; returns when a Refetch asks for a new one."""
    try:
        async with client.stream("GET", WATCH_PATH, params={"mask": str(WATCH_MASK)}) as resp:
            if resp.status_code != 200:
                await resp.aread()
                text = resp.text.strip().splitlines()[0] if resp.text.strip() else ""
                if resp.status_code >= 500:
                    raise _Transient(f"tailscaled answered {resp.status_code}: {text}")
                hint = " (run as root, or make this user tailscale's operator)" \
                    if resp.status_code == 403 else ""
                raise IdentityError(
                    f"tailscaled at {socket} answered {resp.status_code} to {WATCH_PATH}:"
                    f" {text}{hint}"
                )
            initial = True
            async for line in resp.aiter_lines():
                if not line.strip():
                    continue
                try:
                    event = read_notify(json.loads(line), initial=initial)
                except ValueError as e:
                    raise _Transient(f"unreadable message from tailscaled: {e}") from None
                initial = False
                if isinstance(event, Refetch):
                    return
                if event is not None:
                    yield event
    except httpx.TransportError as e:
        raise _Transient(f"cannot reach it: {e or type(e).__name__}") from None
    raise _Transient("tailscaled ended the stream")
