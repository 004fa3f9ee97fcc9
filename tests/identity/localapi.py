"""A stand-in tailscaled LocalAPI for tests: real HTTP over a Unix socket, real JSON shapes.

Shapes follow tailscaled's ``apitype.WhoIsResponse`` / ``tailcfg.Node`` / ``ipnstate.Status``
/ ``ipn.Notify`` / ``netmap.NetworkMap`` (trimmed to fields plus a few that tssh must ignore).
Like tailscaled it refuses a Host header other than ``local-tailscaled.sock`` and answers 404
"no match for IP:port" for unknown peers.

``watch-ipn-bus`` streams one Notify per line: with the NotifyInitialNetMap bit (8) in ``mask``
the first carries the whole NetMap (``null`` before the first one); a later netmap change sends
the whole NetMap again when ``legacy_netmap_notify`` is set (older tailscaled, Windows), else
only ``SelfChange`` (newer tailscaled on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as HypercornConfig
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
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
    # The netmap's SSHPolicy (a tailcfg.SSHPolicy JSON value); None: control sent none.
    ssh_policy: Any = None
    has_netmap: bool = True
    legacy_netmap_notify: bool = False
    watch_status: int = 200  # answer watch-ipn-bus with this status instead of a stream
    watch_silent: bool = False  # accept watch-ipn-bus but send nothing (a wedged tailscaled)
    watchers: list[asyncio.Queue[dict[str, Any] | None]] = field(default_factory=list)

    def netmap(self) -> dict[str, Any] | None:
        """A ``netmap.NetworkMap`` as tailscaled marshals it (no JSON tags: Go field names)."""
        if not self.has_netmap:
            return None
        self_node, _ = self.nodes[0]
        users = {str(u["ID"]): u for _, u in self.nodes}
        return {
            "Cached": False, "SelfNode": self_node, "AllCaps": None, "NodeKey": self_node["Key"],
            "MachineKey": self_node["Machine"], "Peers": [n for n, _ in self.nodes[1:]],
            "DNS": {"Resolvers": None, "Domains": ["example.ts.net"]},
            "PacketFilter": None, "PacketFilterRules": None, "SSHPolicy": self.ssh_policy,
            "CollectServices": False, "DERPMap": None, "DisplayMessages": None,
            "TKAEnabled": False, "TKAHead": "", "Domain": "example.com",
            "DomainAuditLogID": "", "UserProfiles": users,
        }

    def notify(self, **fields: Any) -> dict[str, Any]:
        """An ``ipn.Notify``: fields without omitempty are always present, null when unset."""
        base: dict[str, Any] = {
            "Version": "1.90.0-t0000000", "ErrMessage": None, "LoginFinished": None,
            "State": None, "Prefs": None, "NetMap": None, "Engine": None, "BrowseToURL": None,
            "DriveShares": None,
        }
        base.update(fields)
        return base

    def initial_notify(self, mask: int) -> dict[str, Any] | None:
        if not mask & 0b1111:  # no NotifyWatchEngineUpdates/InitialState/Prefs/NetMap bit
            return None
        fields: dict[str, Any] = {}
        if mask & 8:
            nm = self.netmap()
            fields["NetMap"] = nm
            if nm is not None:
                fields["SelfChange"] = self.nodes[0][0]
        return self.notify(**fields)

    def publish_netmap(self) -> None:
        """Tell every watcher the netmap changed, as tailscaled does after a map response."""
        if self.legacy_netmap_notify:
            message = self.notify(NetMap=self.netmap(), SelfChange=self.nodes[0][0])
        else:
            message = self.notify(SelfChange=self.nodes[0][0])
        self.publish(message)

    def publish(self, message: dict[str, Any] | None) -> None:
        """Send ``message`` to every watcher; None ends their streams (tailscaled restarting)."""
        for queue in self.watchers:
            queue.put_nowait(message)

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

    async def watch_ipn_bus(request: Request) -> Response:
        tailnet.requests.append(str(request.url.path) + "?" + request.url.query)
        if not host_ok(request):
            return PlainTextResponse("invalid localapi Host header\n", status_code=403)
        if tailnet.watch_status != 200:
            return PlainTextResponse("watch ipn bus access denied\n",
                                     status_code=tailnet.watch_status)
        try:
            mask = int(request.query_params.get("mask", "0"))
        except ValueError:
            return PlainTextResponse("bad mask\n", status_code=400)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        first = None if tailnet.watch_silent else tailnet.initial_notify(mask)
        if first is not None:
            queue.put_nowait(first)
        tailnet.watchers.append(queue)

        async def lines() -> AsyncIterator[bytes]:
            try:
                while (message := await queue.get()) is not None:
                    yield json.dumps(message).encode() + b"\n"
            finally:
                tailnet.watchers.remove(queue)

        return StreamingResponse(lines(), media_type="application/json")

    return Starlette(routes=[
        Route("/localapi/v0/whois", whois), Route("/localapi/v0/status", status),
        Route("/localapi/v0/watch-ipn-bus", watch_ipn_bus),
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
        tailnet.publish(None)  # end open watch-ipn-bus streams, or shutdown waits for them
        stop.set()
        await asyncio.wait_for(task, 10)
