"""A stand-in tailscaled LocalAPI for tests: real HTTP over a Unix socket, real JSON shapes.

Shapes follow tailscaled's ``apitype.WhoIsResponse`` / ``tailcfg.Node`` / ``ipnstate.Status``
(trimmed to fields plus a few that tssh must ignore). Like tailscaled it refuses a Host header
other than ``local-tailscaled.sock`` and answers 404 "no match for IP:port" for unknown peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

TAGGED_DEVICES = {"ID": 2147455555, "LoginName": "tagged-devices", "DisplayName": "Tagged Devices",
                  "ProfilePicURL": "", "Roles": []}
ALICE = {"ID": 6001, "LoginName": "alice@example.com", "DisplayName": "Alice",
         "ProfilePicURL": "", "Roles": []}
BOB = {"ID": 6002, "LoginName": "bob@example.com", "DisplayName": "Bob",
       "ProfilePicURL": "", "Roles": []}


def node(node_id: int, stable: str, fqdn: str, addrs: list[str], user: dict[str, Any],
         tags: list[str] | None = None, host_keys: list[str] | None = None) -> dict[str, Any]:
    """A ``tailcfg.Node`` as tailscaled marshals it (Addresses are prefixes, Name has a dot)."""
    n: dict[str, Any] = {
        "ID": node_id, "StableID": stable, "Name": fqdn, "User": user["ID"],
        "Key": "nodekey:" + "ab" * 32, "KeyExpiry": "0001-01-01T00:00:00Z",
        "Machine": "mkey:" + "cd" * 32, "DiscoKey": "discokey:" + "ef" * 32,
        "Addresses": [f"{a}/{32 if ':' not in a else 128}" for a in addrs],
        "AllowedIPs": [f"{a}/{32 if ':' not in a else 128}" for a in addrs],
        "HomeDERP": 1,
        "Hostinfo": {"OS": "linux", "Hostname": fqdn.split(".")[0]},
        "Created": "2026-01-01T00:00:00Z", "MachineAuthorized": True,
    }
    if tags:
        n["Tags"] = tags
    if host_keys:
        n["Hostinfo"]["sshHostKeys"] = host_keys
    return n


@dataclass
class Tailnet:
    """The nodes the fake tailscaled knows: (node JSON, user profile) pairs; first is self."""

    nodes: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    backend_state: str = "Running"
    requests: list[str] = field(default_factory=list)

    def find(self, ip: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for n, user in self.nodes:
            if any(a.split("/")[0] == ip for a in n["Addresses"]):
                return n, user
        return None

    def peer_status(self, n: dict[str, Any]) -> dict[str, Any]:
        ps: dict[str, Any] = {
            "ID": n["StableID"], "PublicKey": n["Key"], "HostName": n["Hostinfo"]["Hostname"],
            "DNSName": n["Name"], "OS": "linux", "UserID": n["User"],
            "TailscaleIPs": [a.split("/")[0] for a in n["Addresses"]],
            "Addrs": None, "CurAddr": "", "Relay": "fra", "RxBytes": 0, "TxBytes": 0,
            "Created": n["Created"], "LastWrite": "0001-01-01T00:00:00Z",
            "LastSeen": "0001-01-01T00:00:00Z", "LastHandshake": "0001-01-01T00:00:00Z",
            "Online": True, "ExitNode": False, "ExitNodeOption": False, "Active": False,
            "InNetworkMap": True, "InMagicSock": True, "InEngine": True,
        }
        if "Tags" in n:
            ps["Tags"] = n["Tags"]
        if "sshHostKeys" in n["Hostinfo"]:
            ps["sshHostKeys"] = n["Hostinfo"]["sshHostKeys"]
        return ps

    def status(self, peers: bool) -> dict[str, Any]:
        self_node, self_user = self.nodes[0]
        users = {str(self_user["ID"]): self_user}
        peer_map = {}
        if peers:
            for n, user in self.nodes[1:]:
                peer_map[f"nodekey:{n['ID']:064x}"] = self.peer_status(n)
                users[str(user["ID"])] = user
        return {
            "Version": "1.90.0-t0000000", "TUN": True, "BackendState": self.backend_state,
            "HaveNodeKey": True, "AuthURL": "",
            "TailscaleIPs": [a.split("/")[0] for a in self_node["Addresses"]],
            "Self": self.peer_status(self_node), "Health": [],
            "MagicDNSSuffix": "example.ts.net",
            "CurrentTailnet": {"Name": "example.com", "MagicDNSSuffix": "example.ts.net",
                               "MagicDNSEnabled": True},
            "CertDomains": None, "Peer": peer_map if peers else None, "User": users,
            "ClientVersion": None,
        }


def build_app(tailnet: Tailnet) -> Starlette:
    def host_ok(request: Request) -> bool:
        return request.headers.get("host", "") in ("", "local-tailscaled.sock")

    async def whois(request: Request) -> Response:
        tailnet.requests.append(str(request.url.path) + "?" + request.url.query)
        if not host_ok(request):
            return PlainTextResponse("invalid localapi Host header\n", status_code=403)
        addr = request.query_params.get("addr", "")
        if not addr:
            return PlainTextResponse("missing 'addr' parameter\n", status_code=400)
        try:
            ip = str(ipaddress.ip_address(addr))
        except ValueError:
            host, sep, port = addr.rpartition(":")
            try:
                ip = str(ipaddress.ip_address(host.strip("[]")))
                int(port)
            except ValueError:
                return PlainTextResponse("invalid 'addr' parameter\n", status_code=400)
            if not sep:
                return PlainTextResponse("invalid 'addr' parameter\n", status_code=400)
        found = tailnet.find(ip)
        if found is None:
            return PlainTextResponse("no match for IP:port\n", status_code=404)
        n, user = found
        profile = TAGGED_DEVICES if "Tags" in n else user
        return JSONResponse({"Node": n, "UserProfile": profile, "CapMap": None})

    async def status(request: Request) -> Response:
        tailnet.requests.append(str(request.url.path) + "?" + request.url.query)
        if not host_ok(request):
            return PlainTextResponse("invalid localapi Host header\n", status_code=403)
        peers = request.query_params.get("peers", "true") != "false"
        return JSONResponse(tailnet.status(peers))

    return Starlette(routes=[
        Route("/localapi/v0/whois", whois), Route("/localapi/v0/status", status),
    ])


@contextlib.asynccontextmanager
async def serve_localapi(socket_path: Path, tailnet: Tailnet) -> AsyncIterator[None]:
    """Serve the fake LocalAPI on ``socket_path`` (hypercorn, HTTP/1.1) for the block."""
    config = HypercornConfig()
    config.bind = [f"unix:{socket_path}"]
    config.accesslog = None
    config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(build_app(tailnet), config, shutdown_trigger=stop.wait))
    try:
        for _ in range(200):  # bounded: 2 s
            if socket_path.exists() or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert socket_path.exists(), "fake LocalAPI did not start"
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
