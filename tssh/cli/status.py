"""``tssh status [--json]``: what the running daemon is doing (docs/daemon.md).

The daemon defines the status object; ``render_status`` (pure) presents the keys it knows
(see ``ControlHandler.status``) and shows any other key as it is, so a new field in the
daemon appears here without a change. Control characters are printed escaped.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from tssh.cli.daemon_socket import add_state_dir_argument, control_path
from tssh.server.control import get_status

INDENT = "  "


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status", help="show the running daemon's state",
        description="Show whether the SSH server is on, where it listens, its identity "
        "backend, policy, recorders and live sessions.",
    )
    parser.add_argument("--json", action="store_true", help="print the raw status object")
    add_state_dir_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    status = get_status(control_path(args))
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=False))
    else:
        print(render_status(status), end="")
    return 0


def _scalar(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_scalar(v) for v in value) if value else "none"
    return str(value)


def _is_scalar_list(value: object) -> bool:
    return isinstance(value, list | tuple) and not any(
        isinstance(v, dict | list | tuple) for v in value
    )


def _generic(key: str, value: object, depth: int) -> list[str]:
    pad = INDENT * depth
    if isinstance(value, Mapping):
        if not value:
            return [f"{pad}{key}: none"]
        lines = [f"{pad}{key}:"]
        for k, v in value.items():
            lines += _generic(str(k), v, depth + 1)
        return lines
    if isinstance(value, list | tuple) and not _is_scalar_list(value):
        lines = [f"{pad}{key}:"]
        for item in value:
            if isinstance(item, Mapping):
                lines.append(f"{pad}{INDENT}- " + ", ".join(
                    f"{k}={_scalar(v)}" for k, v in item.items()
                ))
            else:
                lines.append(f"{pad}{INDENT}- {_scalar(item)}")
        return lines
    return [f"{pad}{key}: {_scalar(value)}"]


def _policy(value: object) -> list[str] | None:
    if not isinstance(value, Mapping):
        return None
    lines = [f"policy: {_scalar(value.get('source'))}"]
    if value.get("error"):
        lines.append(f"{INDENT}error: {value['error']}")
    lines += [line for k, v in value.items() if k not in ("source", "error")
              for line in _generic(str(k), v, 1)]
    return lines


def _recorders(value: object) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(r, Mapping) for r in value):
        return None
    if not value:
        return ["recorders: none"]
    lines = ["recorders:"]
    for rec in value:
        name = rec.get("name") or rec.get("address") or "?"
        where = f" ({rec['address']})" if rec.get("name") and rec.get("address") else ""
        health = rec.get("healthy")
        state = "healthy" if health is True else "unhealthy" if health is False else "unknown"
        error = f": {rec['error']}" if rec.get("error") else ""
        lines.append(f"{INDENT}{name}{where}: {state}{error}")
    return lines


def _sessions(value: object) -> list[str] | None:
    if not isinstance(value, list) or not all(isinstance(s, Mapping) for s in value):
        return None
    if not value:
        return ["sessions: none"]
    lines = [f"sessions: {len(value)}"]
    for s in value:
        who = s.get("user") or "?"
        local = f" as {s['localUser']}" if s.get("localUser") else ""
        origin = f" from {s['from']}" if s.get("from") else ""
        since = f" since {s['started']}" if s.get("started") else ""
        ident = f"{s['id']}: " if s.get("id") else ""
        rest = ", ".join(f"{k}={_scalar(v)}" for k, v in s.items()
                         if k not in ("id", "user", "localUser", "from", "started", "recording"))
        lines.append(f"{INDENT}{ident}{who}{local}{origin}{since}" + (f" ({rest})" if rest else ""))
        recording = s.get("recording")
        if isinstance(recording, Mapping):
            lines.append(f"{INDENT * 2}{_recording(recording)}")
        elif recording is not None:
            lines.append(f"{INDENT * 2}recording: {_scalar(recording)}")
    return lines


def _forwards(value: object) -> list[str] | None:
    """``forwards: N`` then one line each: ``CONN: KIND DEST (from ORIGIN) as USER: sent N B,
    received M B``."""
    if not isinstance(value, list) or not all(isinstance(f, Mapping) for f in value):
        return None
    if not value:
        return ["forwards: none"]
    lines = [f"forwards: {len(value)}"]
    for f in value:
        origin = f" from {f['origin']}" if f.get("origin") else ""
        local = f" as {f['localUser']}" if f.get("localUser") else ""
        since = f" since {f['opened']}" if f.get("opened") else ""
        lines.append(f"{INDENT}{_scalar(f.get('connection'))}: {_scalar(f.get('kind'))} "
                     f"{_scalar(f.get('destination'))}{origin}{local}{since}: sent "
                     f"{_scalar(f.get('bytesSent'))} B, received "
                     f"{_scalar(f.get('bytesReceived'))} B")
    return lines


def _recording(rec: Mapping[str, Any]) -> str:
    """``recording to ADDR (v2, enforced): sent N B, acked M B`` for one live session."""
    state = rec.get("state")
    where = rec.get("recorder")
    if state == "unrecorded" or not where:
        text = "recording: none (no recorder accepted it)"
    else:
        how = ", ".join(str(x) for x in (rec.get("protocol"), "enforced"
                                         if rec.get("enforced") else None) if x)
        text = f"recording to {where}" + (f" ({how})" if how else "")
        if state not in (None, "recording"):
            text += f" [{state}]"
        text += f": sent {_scalar(rec.get('bytesSent'))} B"
        if rec.get("bytesAcked") is not None:
            text += f", acked {rec['bytesAcked']} B"
    if rec.get("bytesDropped"):
        text += f", dropped {rec['bytesDropped']} B"
    if rec.get("error"):
        text += f", error: {rec['error']}"
    return text


def render_status(status: Mapping[str, Any]) -> str:
    """Human-readable lines for a status object; known keys first, in a fixed order."""
    lines: list[str] = []
    if "ssh" in status:
        ssh = status["ssh"]
        lines.append(f"SSH: {'on' if ssh is True else 'off' if ssh is False else _scalar(ssh)}")
    for key in ("listening", "identity"):
        if key in status:
            lines += _generic(key, status[key], 0)
    special = {"policy": _policy, "recorders": _recorders, "sessions": _sessions,
               "forwards": _forwards}
    for key, present in special.items():
        if key in status:
            lines += present(status[key]) or _generic(key, status[key], 0)
    for key, value in status.items():
        if key not in ("ssh", "listening", "identity", *special):
            lines += _generic(key, value, 0)
    return "".join(_printable(line) + "\n" for line in lines)


def _printable(line: str) -> str:
    """``line`` with every non-printable character escaped (``\\x1b``, ``\\n``): names in the
    status come from the tailnet and from peers, and must not drive the terminal."""
    if line.isprintable():
        return line
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in line)
