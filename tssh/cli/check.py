"""``tssh check list|approve|deny|revoke``: the operator's side of check mode.

Logins that an ``action: "check"`` rule holds wait in the running daemon until someone on
this node approves or denies them here (docs/daemon.md, "Check mode"). Same rights as
``tssh set``: root or the daemon's user, over the control socket.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from tssh.cli.daemon_socket import add_state_dir_argument, control_path
from tssh.cli.status import _printable
from tssh.server.control import check_request


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="approve or deny logins held by check rules",
        description="Logins held by the policy's check rules: list them, approve or deny "
        "one, or revoke the approvals given.",
    )
    sub = parser.add_subparsers(dest="check_command", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="logins waiting for an approval")
    listing.add_argument("--json", action="store_true",
                         help='print {"pending": [{"id", "node", "login", "localUser", '
                         '"since", "url"}]}')
    add_state_dir_argument(listing)
    listing.set_defaults(func=run_list)
    for name, verb in (("approve", "let the held login in"), ("deny", "refuse the held login")):
        p = sub.add_parser(name, help=verb)
        p.add_argument("id", help="the id the client was shown (tssh check list)")
        add_state_dir_argument(p)
        p.set_defaults(func=run_decide, op=name)
    revoke = sub.add_parser(
        "revoke", help="drop approvals and end the connections only they admit")
    revoke.add_argument("--login", default=None, help="only this login's approvals")
    add_state_dir_argument(revoke)
    revoke.set_defaults(func=run_revoke)


def run_list(args: argparse.Namespace) -> int:
    result = check_request(control_path(args), "list")
    pending = result.get("pending") or []
    if args.json:
        print(json.dumps({"pending": pending}, indent=2))
        return 0
    print(render_pending(pending), end="")
    return 0


def render_pending(pending: list[Any]) -> str:
    if not pending:
        return "no logins waiting for an approval\n"
    lines = []
    for h in pending:
        when = h.get("since") or "?"
        url = f" {h['url']}" if h.get("url") else ""
        lines.append(f"{h.get('id')}  {h.get('login')} from {h.get('node')} as "
                     f"{h.get('localUser')}, waiting since {when}{url}")
    return "\n".join(_printable(line) for line in lines) + "\n"


def run_decide(args: argparse.Namespace) -> int:
    result = check_request(control_path(args), args.op, id=args.id)
    who = f"{result.get('login')} from {result.get('node')}"
    if args.op == "approve":
        until = f" until {result['expires']}" if result.get("expires") else \
            " (this login only)"
        print(_printable(f"approved {who}{until}"))
    else:
        print(_printable(f"denied {who}"))
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    result = check_request(control_path(args), "revoke", login=args.login)
    revoked = result.get("revoked") or []
    print(f"revoked {len(revoked)} approval(s); ended {result.get('connectionsEnded', 0)} "
          "connection(s)")
    return 0
