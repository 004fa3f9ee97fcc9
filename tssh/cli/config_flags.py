"""Command-line flags for daemon settings, named and checked exactly as ``load_config`` does.

A command adds the flags it wants (``tssh daemon`` all of them, ``tssh-recorder`` a few) and
hands ``config_overrides(args)`` to ``load_config``. Values stay strings here so that a bad one
is reported by ``load_config`` like a bad file or environment value (``--port: ...``).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

from tssh.config import FILE_ONLY_KEYS, PARSERS, env_var, flag

LIST_KEYS = frozenset({"listen", "host_keys", "permit_open", "permit_listen"})
HELP = {
    "identity": "identity backend: netmap, tailscale or wireguard",
    "netmap": "netmap file (identity netmap) or WireGuard inventory (identity wireguard)",
    "tailscale_socket": "tailscaled's LocalAPI socket",
    "wireguard_interface": "WireGuard interface (identity wireguard)",
    "policy": "Tailscale-format policy file (HuJSON)",
    "port": "SSH port",
    "listen": "address to listen on (repeatable; default: this node's tailnet addresses)",
    "state_dir": "state directory (control socket, on/off switch)",
    "recorder_port": "port of the recorder nodes",
    "host_keys": "host key file (repeatable)",
    "log_format": "log format: json or text",
    "log_level": "log level: debug, info, warning or error",
    "local_recording_dir": "debug: write recordings here when no recorder accepts them",
    "max_sessions": "session channels one SSH connection may have open at once",
    "channel_window": "bytes a client may send on a session before its program reads them",
    "login_grace_time": "seconds a connection has to log in (0: no limit)",
    "max_startups": "start:rate:full random early drop of connections logging in",
    "per_source_max_startups": "connections logging in at once from one address",
    "client_alive_interval": "seconds of client silence before asking it to answer (0: off)",
    "client_alive_count_max": "unanswered asks before the connection is closed",
    "idle_timeout": "seconds without I/O on any channel that end a connection (0: none)",
    "session_max_duration": "seconds a session may run (0: no limit)",
    "check_timeout": "seconds a login held by a check rule waits for an approval",
    "check_oidc_issuer": "OIDC issuer URL for approving held logins through the identity provider",
    "check_oidc_client_id": "this daemon's OIDC client id",
    "check_oidc_client_secret_file": "file holding the OIDC client secret (none: PKCE only)",
    "check_oidc_claim": "ID token claim that must equal the peer's login (default email)",
    "check_oidc_max_age": "seconds a sign-in at the provider may be old to approve a login",
    "check_port": "port of the approval pages (with check_oidc_issuer)",
    "allow_tcp_forwarding": "TCP forwarding: yes, no, local (-L, -D, -W) or remote (-R)",
    "allow_stream_local_forwarding": "Unix socket forwarding: yes, no, local or remote",
    "allow_agent_forwarding": "agent forwarding (ssh -A): yes or no",
    "permit_open": "host:port -L/-D/-W may reach (repeatable; * for either part)",
    "permit_listen": "host:port -R may listen on (repeatable; * for either part)",
    "gateway_ports": "-R listeners on other addresses than loopback: yes or no",
    "audit_max_bytes": "size at which the audit log (audit.jsonl) is rotated",
    "audit_files": "audit log files kept, the current one included",
    "audit_unparsable": "a transfer stream the audit cannot parse: pass or cut",
    "workers": "processes serving SSH connections (1: the daemon's own)",
}
_DEST = "config_"  # prefix of the argparse destinations, kept apart from a command's own


def add_config_arguments(
    parser: argparse.ArgumentParser, keys: Iterable[str] | None = None
) -> None:
    """``--config FILE`` plus one flag per config key in ``keys`` (default: all)."""
    parser.add_argument(
        "--config", metavar="FILE", type=Path, default=None,
        help=f"TOML configuration file (default: ${env_var('config')}, else none)",
    )
    for key in keys if keys is not None else PARSERS:
        if key in FILE_ONLY_KEYS:
            continue
        if key not in PARSERS:
            raise ValueError(f"no config key {key!r}")
        parser.add_argument(
            flag(key), dest=_DEST + key, metavar=key.split("_")[-1].upper(),
            action="append" if key in LIST_KEYS else "store", default=None,
            help=f"{HELP.get(key, key)} [{env_var(key)}]",
        )


def config_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The flags given on the command line, by config key (absent ones left out)."""
    return {
        name[len(_DEST):]: value
        for name, value in vars(args).items()
        if name.startswith(_DEST) and value is not None
    }
