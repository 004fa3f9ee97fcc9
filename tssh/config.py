"""The daemon's configuration: one typed object built from TOML, then environment, then flags.

Only the shape lives here for now; loading (TOML + ``TSSH_*`` + flags) is added beside it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

IdentityBackend = Literal["netmap", "tailscale", "wireguard"]


def default_state_dir() -> Path:
    """``/var/lib/tssh`` for root, else ``$XDG_STATE_HOME/tssh`` (DESIGN §4)."""
    if os.geteuid() == 0:
        return Path("/var/lib/tssh")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "tssh"


@dataclass(frozen=True)
class Config:
    identity: IdentityBackend = "netmap"
    # netmap file (identity "netmap") or inventory file (identity "wireguard")
    netmap: Path | None = None
    tailscale_socket: Path = Path("/var/run/tailscale/tailscaled.sock")
    wireguard_interface: str | None = None
    # None with the tailscale backend: the policy comes from the tailnet (later)
    policy: Path | None = None
    port: int = 22
    # Explicit listen addresses; empty means "this node's tailnet addresses" from the backend.
    listen: tuple[str, ...] = ()
    state_dir: Path = field(default_factory=default_state_dir)
    recorder_port: int = 80
    # Host key files; empty means /etc/ssh/ssh_host_*_key when root, else generated in state_dir.
    host_keys: tuple[Path, ...] = ()
    log_format: Literal["json", "text"] = "json"
    log_level: str = "info"
    # Debug only: when no recorder is reachable, write the stream to this directory instead.
    local_recording_dir: Path | None = None
