"""An interactive user, measured: one SSH PTY session that types a key at a steady pace and
times each echo. Runs on a lab node (inside its namespace), so it is its own program:

    python -m tests.lab.typist HOST PORT USER --seconds 5 [--key FILE] [--bind IP]

The remote side is ``stty raw -echo; cat``: each byte comes straight back, so a round trip
is the network's plus the server's own delay. Prints one JSON line per keystroke,
``{"at": UNIX_TIME, "ms": ECHO_MS}`` (``at`` when the key was sent, so a caller can split
the keystrokes by what else happened meanwhile), then ``{"done": N}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import asyncssh

ECHO_TIMEOUT = 30.0  # seconds one echo may take before the run counts as failed
REPO = Path(__file__).resolve().parents[2]


def command(prefix: Sequence[str], host: str, port: int, user: str, *, seconds: float,
            interval: float = 0.05, key: Path | None = None, bind: str | None = None,
            kex: str | None = None, cipher: str | None = None) -> list[str]:
    """The typist's argv, run after ``prefix`` (``ip netns exec NODE``); cwd: the repo."""
    argv = [*prefix, sys.executable, "-m", "tests.lab.typist", host, str(port), user,
            "--seconds", str(seconds), "--interval", str(interval)]
    for flag, value in (("--key", key), ("--bind", bind), ("--kex", kex),
                        ("--cipher", cipher)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run(argv: list[str]) -> list[tuple[float, float]]:
    """Run a typist to its end: (sent at, echo ms) per keystroke; RuntimeError if it failed."""
    out = subprocess.run(argv, capture_output=True, timeout=120, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"the typist failed ({out.returncode}): {out.stderr[-2000:]!r}")
    return parse(out.stdout.decode())


async def type_for(args: argparse.Namespace) -> int:
    options: dict[str, object] = {}
    if args.kex:
        options["kex_algs"] = [args.kex]
    if args.cipher:
        options["encryption_algs"] = [args.cipher]
    conn = await asyncio.wait_for(asyncssh.connect(
        args.host, args.port, username=args.user, known_hosts=None, agent_path=None,
        client_keys=[args.key] if args.key else None,
        local_addr=(args.bind, 0) if args.bind else None, **options), 60)
    async with conn:
        proc = await conn.create_process("stty raw -echo; cat", term_type="xterm",
                                         encoding=None)
        await asyncio.sleep(0.5)  # the shell's stty runs before the first key
        count = 0
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            at, start = time.time(), time.perf_counter()
            proc.stdin.write(b"x")
            await asyncio.wait_for(proc.stdout.readexactly(1), ECHO_TIMEOUT)
            ms = (time.perf_counter() - start) * 1000
            print(json.dumps({"at": at, "ms": round(ms, 3)}), flush=True)
            count += 1
            await asyncio.sleep(args.interval)
        proc.close()
    print(json.dumps({"done": count}), flush=True)
    return 0


def parse(lines: str) -> list[tuple[float, float]]:
    """A typist's output as (sent at, echo ms) pairs; ValueError unless it finished."""
    keys, done = [], None
    for line in lines.splitlines():
        entry = json.loads(line)
        if "done" in entry:
            done = entry["done"]
        else:
            keys.append((float(entry["at"]), float(entry["ms"])))
    if done is None or done != len(keys):
        raise ValueError(f"the typist did not finish: {lines[-500:]!r}")
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("user")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=0.05, help="pause between keys")
    parser.add_argument("--key", help="client key file (a server that wants one)")
    parser.add_argument("--bind", help="local address to connect from")
    parser.add_argument("--kex")
    parser.add_argument("--cipher")
    return asyncio.run(type_for(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
