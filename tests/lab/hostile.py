"""A hostile lab node's tools against an SSH daemon, one program run inside the node's
namespace (the daemon is reachable only from there); each prints one JSON summary line.

    python -m tests.lab.hostile flood HOST PORT USER --count 1000 --seconds 10
    python -m tests.lab.hostile garbage HOST PORT
    python -m tests.lab.hostile slowloris HOST PORT --count 100 --seconds 20

``flood``: real SSH login attempts (asyncssh) started at an even pace over ``seconds``; each
ends denied, closed early (a start-up limit) or, the failure looked for, logged in.
``garbage``: connections that send what no SSH client sends, before and during the key
exchange; for each, how long until the daemon closed it and what it said.
``slowloris``: ``count`` connections trickling an SSH version line one byte per 0.5 s;
how long each stayed open and how many were open at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import asyncssh
from asyncssh.packet import Boolean, Byte, String, UInt32

MSG_KEXINIT, MSG_KEX_ECDH_INIT = 20, 30  # RFC 4253 §12, RFC 5656 §7.1

ATTEMPT_TIMEOUT = 30.0
CLOSE_TIMEOUT = 20.0  # a connection the daemon has not closed by then: "open"
TRICKLE = 0.5


async def attempt(host: str, port: int, user: str) -> str:
    try:
        conn = await asyncio.wait_for(asyncssh.connect(
            host, port, username=user, known_hosts=None, client_keys=None,
            agent_path=None, password=None, kbdint_auth=False), ATTEMPT_TIMEOUT)
    except asyncssh.PermissionDenied:
        return "denied"
    except asyncssh.DisconnectError as e:
        return "denied" if "permit" in e.reason or "refused" in e.reason else "closed"
    except TimeoutError:
        return "timeout"
    except (OSError, asyncssh.Error, EOFError):
        return "closed"
    conn.close()
    return "logged in"


async def flood(args: argparse.Namespace) -> dict[str, Any]:
    start = time.monotonic()
    tasks = []
    for i in range(args.count):
        await asyncio.sleep(max(0.0, start + i * args.seconds / args.count - time.monotonic()))
        tasks.append(asyncio.create_task(attempt(args.host, args.port, args.user)))
    launched = time.monotonic() - start
    outcomes = await asyncio.gather(*tasks)
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome] = counts.get(outcome, 0) + 1
    return {"attempts": len(outcomes), "outcomes": counts, "launched_s": round(launched, 2),
            "elapsed_s": round(time.monotonic() - start, 2)}


VERSION = b"SSH-2.0-OpenSSH_9.2p1 lab\r\n"


def packet(payload: bytes) -> bytes:
    """An unencrypted SSH binary packet (RFC 4253 §6: block size 8, padding >= 4)."""
    padding = 8 - (5 + len(payload)) % 8
    if padding < 4:
        padding += 8
    return UInt32(1 + len(payload) + padding) + Byte(padding) + payload + bytes(padding)


def kexinit() -> bytes:
    """A client KEXINIT the daemon accepts: the key exchange starts, then goes wrong."""
    lists = [b"curve25519-sha256", b"ssh-ed25519", *[b"aes128-gcm@openssh.com"] * 2,
             *[b"hmac-sha2-256"] * 2, b"none", b"none", b"", b""]
    return packet(Byte(MSG_KEXINIT) + bytes(16) + b"".join(String(x) for x in lists)
                  + Boolean(False) + UInt32(0))


# Each case: what the connection sends, in order.
GARBAGE: dict[str, list[bytes]] = {
    "binary before the version line": [bytes(range(256)) * 64],
    "over-long line, no newline (1 MiB)": [b"A" * (1 << 20)],
    "many pre-version lines": [b"hello there\r\n" * 5000],
    "version line of 100 KiB": [b"SSH-2.0-" + b"x" * 100_000 + b"\r\n"],
    "wrong protocol version": [b"SSH-1.5-ancient\r\n"],
    "HTTP request": [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    "packet length 0xffffffff after the version": [VERSION, b"\xff\xff\xff\xff" + bytes(64)],
    "random bytes after the version": [VERSION, bytes((i * 97 + 13) % 256
                                                      for i in range(65536))],
    "KEXINIT, then a 5-byte curve25519 key": [
        VERSION, kexinit(), packet(Byte(MSG_KEX_ECDH_INIT) + String(b"short"))],
    "KEXINIT, then random bytes": [VERSION, kexinit(), bytes((i * 31 + 7) % 256
                                                            for i in range(65536))],
}


async def garbage_case(host: str, port: int, sends: list[bytes]) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(host, port)
    start = time.monotonic()
    got = b""
    ending = "open"
    try:
        for data in sends:
            writer.write(data)
            try:
                await asyncio.wait_for(writer.drain(), CLOSE_TIMEOUT)
            except (OSError, TimeoutError):
                break
        deadline = start + CLOSE_TIMEOUT
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536),
                                               deadline - time.monotonic())
            except TimeoutError:
                break
            except OSError:
                ending = "reset"
                break
            if not chunk:
                ending = "closed"
                break
            got += chunk
    finally:
        writer.close()
    return {"ending": ending, "after_s": round(time.monotonic() - start, 3),
            "said": got[:300].decode("latin-1")}


async def garbage(args: argparse.Namespace) -> dict[str, Any]:
    return {name: await garbage_case(args.host, args.port, sends)
            for name, sends in GARBAGE.items()}


async def slow_connection(host: str, port: int, give_up: float,
                          open_at: list[tuple[float, float]]) -> dict[str, Any]:
    asked = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), give_up)
    except (OSError, TimeoutError):
        return {"lasted_s": 0.0, "connect_s": time.monotonic() - asked, "version": False,
                "refused": True}
    start = time.monotonic()  # held from here: a SYN waiting in the backlog is not held
    got, i = b"", 0
    try:
        while time.monotonic() - start < give_up:
            writer.write(VERSION[i % len(VERSION):i % len(VERSION) + 1])
            i += 1
            try:
                chunk = await asyncio.wait_for(reader.read(4096), TRICKLE)
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    finally:
        writer.close()
    lasted = time.monotonic() - start
    open_at.append((start, start + lasted))
    return {"lasted_s": round(lasted, 3), "connect_s": round(start - asked, 3),
            "version": got.startswith(b"SSH-2.0-"), "refused": False}


async def slowloris(args: argparse.Namespace) -> dict[str, Any]:
    spans: list[tuple[float, float]] = []
    results = await asyncio.gather(*(slow_connection(args.host, args.port, args.seconds, spans)
                                     for _ in range(args.count)))
    # The most connections open at once, counting only those past their first second
    # (one closed at once by a start-up limit was never really held).
    held = [(a, b) for a, b in spans if b - a > 1.0]
    peak = max((sum(1 for a, b in held if a <= t < b) for t, _ in held), default=0)
    lasted = [r["lasted_s"] for r in results]
    return {"connections": len(results), "held_over_1s": len(held), "peak_held": peak,
            "got_version": sum(r["version"] for r in results),
            "longest_s": max(lasted), "gave_up": sum(x >= args.seconds for x in lasted),
            "slowest_connect_s": max(r["connect_s"] for r in results),
            "refused": sum(r["refused"] for r in results)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="tool", required=True)
    for name in ("flood", "garbage", "slowloris"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        if name == "flood":
            p.add_argument("user")
        if name != "garbage":
            p.add_argument("--count", type=int, default=100)
            p.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    tools = {"flood": flood, "garbage": garbage, "slowloris": slowloris}
    print(json.dumps(asyncio.run(tools[args.tool](args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
