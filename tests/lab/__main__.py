"""``python -m tests.lab up | down | report``: the reliability lab by hand, and its report.

``up`` builds the lab (tests/lab/testbed.py) and writes its state to a file (``--state``,
default in the temporary directory); ``down`` reads that file and ends exactly what ``up``
started. ``report`` runs the lab's tests and writes docs/reliability.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.lab.report import REPORT, run_and_render
from tests.lab.testbed import SERVERS, STATE_FILE, Testbed, unavailable_reason, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.lab")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down"):
        cmd = commands.add_parser(name)
        cmd.add_argument("--state", type=Path, default=STATE_FILE,
                         help=f"the lab's state file (default {STATE_FILE})")
    report = commands.add_parser("report", help="run the lab's tests, write the report")
    report.add_argument("--short", action="store_true", help="the CI length of each scenario")
    report.add_argument("--output", type=Path, default=REPORT)
    report.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    if args.command == "report":
        return run_and_render(args.short, args.pytest_args, args.output)
    if args.command == "up":
        if args.state.exists():
            print(f"a lab is up already ({args.state}): python -m tests.lab down first",
                  file=sys.stderr)
            return 1
        if reason := unavailable_reason():
            print(f"the lab cannot run here: {reason}", file=sys.stderr)
            return 1
        bed = up(Path(tempfile.mkdtemp(prefix="tssh-lab-")))
        try:
            bed.save(args.state)
        except BaseException:
            bed.down()
            raise
        client = " ".join(bed.lab.exec_argv("client"))
        print(f"lab up; state in {args.state}, logs in {bed.workdir}")
        for server in SERVERS:
            print(f"  {client} ssh -o StrictHostKeyChecking=no "
                  f"{bed.enforced}@{bed.address(server)}    # {server}, enforced recording")
        print(f"  {client} curl {bed.recorder_url('recdisk')}/api/v1/recordings")
        return 0
    if not args.state.exists():
        print(f"no lab state at {args.state}", file=sys.stderr)
        return 1
    Testbed.load(args.state).down()
    args.state.unlink()
    print("lab down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
