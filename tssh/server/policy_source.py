"""Where the daemon's SSH policy comes from, and how it learns that the policy changed.

Two sources behind one interface: a policy file, polled for changes, and the tailnet itself
(the SSH policy tailscaled received from its control plane, with the ``tailscale`` identity
backend and no policy file configured). Either way a bad update never replaces a good policy:
the last good one stays in force and the error is kept for ``tssh status``.

It lives beside the daemon, not in ``tssh.policy``, because it does I/O (it polls files and
follows tailscaled); deciding stays in the pure policy package, behind
:class:`~tssh.policy.decider.Decider` (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tssh.config import Config
from tssh.errors import ConfigError, IdentityError, PolicyError
from tssh.file_signature import FileSignature, file_signature
from tssh.identity.tailnet_policy import (
    DEFAULT_BACKOFF,
    Backoff,
    TailnetPolicy,
    watch_tailnet_policy,
)
from tssh.policy import load_policy
from tssh.policy.compiled import CompiledPolicy, parse_compiled_policy
from tssh.policy.decider import CompiledDecider, Decider, FileDecider

log = logging.getLogger(__name__)

SourceKind = Literal["file", "tailnet"]
OnChange = Callable[[Decider], None]
DEFAULT_POLL_INTERVAL = 2.0


@dataclass(frozen=True)
class PolicyStatus:
    """What ``tssh status`` says about the policy."""

    source: SourceKind
    location: str  # the policy file, or tailscaled's socket
    rules: int  # SSH rules in force; 0 means everyone is refused
    loaded_at: float | None  # unix time the policy in force was loaded; None: none yet
    error: str | None  # why the latest update was not applied (file:line:col: ...), if any

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "location": self.location, "rules": self.rules,
                "loadedAt": self.loaded_at, "error": self.error}


class PolicySource(Protocol):
    """The policy in force, kept current while :meth:`run` runs."""

    def current(self) -> Decider:
        """The policy in force now (deny-all before the first one is known)."""
        ...

    def status(self) -> PolicyStatus:
        ...

    async def start(self) -> None:
        """Load the first policy; raises PolicyError or IdentityError if there is none."""
        ...

    async def run(self, on_change: OnChange) -> None:
        """Follow changes until cancelled, calling ``on_change`` with each new policy in force
        (the daemon re-evaluates live connections then). Raises IdentityError if the tailnet
        source loses tailscaled for good."""
        ...

    async def close(self) -> None:
        ...


class FilePolicySource:
    """A Tailscale-format policy file, re-read when it changes on disk."""

    def __init__(self, path: Path, *, poll_interval: float = DEFAULT_POLL_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._poll_interval = poll_interval
        self._clock = clock
        self._decider: Decider = CompiledDecider(CompiledPolicy())
        self._loaded_at: float | None = None
        self._error: str | None = None
        self._signature: FileSignature | None = None
        # One load at a time: a slow load of an older version finishing after a newer one
        # would otherwise put the older policy back, with the newer signature recorded.
        self._loading = asyncio.Lock()

    def current(self) -> Decider:
        return self._decider

    def status(self) -> PolicyStatus:
        return PolicyStatus("file", str(self._path), self._decider.rule_count, self._loaded_at,
                            self._error)

    async def start(self) -> None:
        async with self._loading:
            self._signature = file_signature(self._path)
            policy = await asyncio.to_thread(load_policy, self._path)
            self._install(FileDecider(policy))

    async def reload(self) -> bool:
        """Re-read the file if it changed since last read; True if a new policy is in force.

        A broken file leaves the previous policy in force and its error in :meth:`status`.
        Safe to call while :meth:`run` polls (on a signal, say): loads take turns.
        """
        async with self._loading:
            signature = file_signature(self._path)
            if signature == self._signature:
                return False
            self._signature = signature
            try:
                policy = await asyncio.to_thread(load_policy, self._path)
            except PolicyError as e:
                # Editors often touch the file again after writing it (mode, owner): the same
                # broken contents are then read again, and need no second log line.
                if str(e) != self._error:
                    log.error("policy not reloaded, the previous one stays in force: %s", e)
                self._error = str(e)
                return False
            self._install(FileDecider(policy))
            return True

    async def run(self, on_change: OnChange) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            if await self.reload():
                on_change(self._decider)

    async def close(self) -> None:
        pass

    def _install(self, decider: Decider) -> None:
        self._decider = decider
        self._loaded_at = self._clock()
        self._error = None


class TailnetPolicySource:
    """The SSH policy tailscaled received from its control plane, followed over its LocalAPI."""

    def __init__(self, socket_path: Path, *, backoff: Backoff = DEFAULT_BACKOFF,
                 first_timeout: float = 30.0, clock: Callable[[], float] = time.time) -> None:
        self._socket = socket_path
        self._backoff = backoff
        self._first_timeout = first_timeout
        self._clock = clock
        self._decider: Decider = CompiledDecider(CompiledPolicy())
        self._loaded_at: float | None = None
        self._error: str | None = None
        self._stream: AsyncGenerator[TailnetPolicy, None] | None = None

    def current(self) -> Decider:
        return self._decider

    def status(self) -> PolicyStatus:
        return PolicyStatus("tailnet", str(self._socket), self._decider.rule_count,
                            self._loaded_at, self._error)

    async def start(self) -> None:
        stream = self._stream = watch_tailnet_policy(self._socket, backoff=self._backoff)
        try:
            first = await asyncio.wait_for(anext(stream), self._first_timeout)
        except TimeoutError:
            await self.close()
            raise IdentityError(
                f"tailscaled at {self._socket} sent no network map within"
                f" {self._first_timeout:g}s"
            ) from None
        except (IdentityError, StopAsyncIteration):
            await self.close()
            raise
        self._apply(first)

    async def run(self, on_change: OnChange) -> None:
        if self._stream is None:
            raise RuntimeError("start() first")
        try:
            async for update in self._stream:
                if self._apply(update):
                    on_change(self._decider)
        except IdentityError as e:
            self._error = str(e)
            raise

    async def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with suppress(IdentityError):
                await stream.aclose()

    def _apply(self, update: TailnetPolicy) -> bool:
        """Put ``update`` in force; False if it is malformed (the previous one stays)."""
        try:
            policy = parse_compiled_policy(update.ssh_policy, source="SSHPolicy")
        except PolicyError as e:
            self._error = f"tailscaled's SSH policy is unusable, the previous one stays: {e}"
            log.error("%s", self._error)
            return False
        self._decider = CompiledDecider(policy)
        self._loaded_at = self._clock()
        if not update.has_netmap:
            self._error = "tailscaled has no network map yet (is it logged in?): everyone is" \
                " refused"
        elif update.ssh_policy is None:
            self._error = "the tailnet sent this node no SSH policy (does its policy file have" \
                " ssh rules for it?): everyone is refused"
        else:
            self._error = None
        return True


def open_policy_source(config: Config, *,
                       poll_interval: float = DEFAULT_POLL_INTERVAL) -> PolicySource:
    """The policy file when one is configured, else (tailscale backend only) the tailnet's."""
    if config.policy is not None:
        return FilePolicySource(config.policy, poll_interval=poll_interval)
    if config.identity == "tailscale":
        return TailnetPolicySource(config.tailscale_socket)
    raise ConfigError(
        f"identity {config.identity!r} needs a policy file (policy = \"FILE\"); only the"
        " tailscale backend can take the policy from the tailnet"
    )
