"""``tssh audit tail``: read the daemon's audit log (docs/audit.md).

The audit log is a file in the state directory, readable by root (or the daemon's user):
this reads it directly, so it works whether or not the daemon is running.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

from tssh.audit.reader import follow, position, read_entries
from tssh.audit.sink import AUDIT_FILE
from tssh.audit.view import AuditFilter, SinceError, parse_since, render
from tssh.cli.config_flags import config_overrides
from tssh.cli.daemon_socket import add_state_dir_argument
from tssh.config import load_partial_config
from tssh.errors import AuditReadError, ConfigError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="read the audit log",
        description="The daemon's audit trail: who connected, what they ran, which files "
        "they moved (docs/audit.md).")
    sub = parser.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    tail = sub.add_parser("tail", help="the last entries of the audit log",
                          description="Print the last audit entries, oldest first: time, "
                          "who, what.")
    tail.add_argument("--json", action="store_true", help="print each entry as its JSON line")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N",
                      help="how many entries (default 10; 0: none, with --follow only new)")
    tail.add_argument("-f", "--follow", action="store_true",
                      help="then wait for new entries and print them as they come")
    tail.add_argument("--since", metavar="T", default=None,
                      help="only entries from T on: RFC 3339 (2026-12-04T02:00:00Z) or how "
                      "long ago (15m, 2h, 1d)")
    tail.add_argument("--connection", metavar="ID", default=None,
                      help="only the entries of this connection (its connectionID)")
    add_state_dir_argument(tail)
    tail.set_defaults(func=run_tail)


def _show(entries: Iterable[Mapping[str, object]], as_json: bool) -> None:
    for entry in entries:
        print(json.dumps(entry, separators=(",", ":")) if as_json else render(entry),
              flush=True)


def run_tail(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise ConfigError(f"-n {args.lines}: give a number of entries, 0 or more")
    config = load_partial_config(args.config, os.environ, config_overrides(args), ["state_dir"])
    path = config.state_dir / AUDIT_FILE
    try:
        since = parse_since(args.since, time.time()) if args.since is not None else None
    except SinceError as e:
        raise ConfigError(str(e)) from None
    wanted = AuditFilter(since=since, connection=args.connection)
    if not path.exists() and not args.follow:
        raise AuditReadError(f"no audit log at {path}: has the daemon run with this state "
                             "directory (--state-dir)?")
    try:
        # Where the log ends before it is read: following goes on from there (an entry
        # written while the last ones are read may show twice, none is left out).
        start = position(path)
        last: collections.deque[Mapping[str, object]] = collections.deque(maxlen=args.lines)
        last.extend(e for e in read_entries(path) if wanted.matches(e))
        _show(last, args.json)
        if args.follow:
            _show((e for e in follow(path, start) if wanted.matches(e)), args.json)
    except PermissionError as e:
        raise AuditReadError(f"cannot read the audit log {e.filename}: it is readable by "
                             "root and the daemon's user only") from None
    except BrokenPipeError:  # `tssh audit tail | head`
        sys.stderr.close()
    return 0
