"""Check mode against the real daemon with the stock ssh client (docs/daemon.md, "Check mode").

bob's laptop (127.0.0.3) logs in as a fresh local account that only a check rule admits; the
test plays the operator with ``tssh check list|approve|deny|revoke``.
"""

from __future__ import annotations

import calendar
import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import (
    BOB_IP,
    NETMAP,
    SERVER_IP,
    DaemonFactory,
    LocalUser,
    TsshDaemon,
    run_ssh,
    ssh_command,
)
from tests.polling import wait_for

# The client shows auth banners only from LogLevel INFO up; ssh keeps an option's first value.
SHOW_BANNER = ("-o", "LogLevel=INFO")


def check_policy(login: str, period: str) -> str:
    return json.dumps({
        "tagOwners": {"tag:prod": ["alice@example.com"]},
        "ssh": [{"action": "check", "src": ["bob@example.com"], "dst": ["tag:prod"],
                 "users": [login], "checkPeriod": period}],
    })


@pytest.fixture
def start(daemon_factory: DaemonFactory, local_user: LocalUser) -> Iterator[Any]:
    """``start(period, *daemon_args)``: a daemon whose policy holds bob's login as the fresh
    local user for a check with that checkPeriod."""
    def run(period: str, *args: str) -> TsshDaemon:
        daemon_factory.policy.write_text(check_policy(local_user.name, period))
        return daemon_factory(extra_args=args)
    yield run


def pending(daemon: TsshDaemon) -> list[dict[str, Any]]:
    result = daemon.tssh("check", "list", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"pending"}
    return list(data["pending"])


def wait_held(daemon: TsshDaemon) -> dict[str, Any]:
    found = wait_for(lambda: pending(daemon), 20, 0.2, what="a held login")
    assert len(found) == 1
    return found[0]


def held_ssh(daemon: TsshDaemon, user: str, *remote: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(ssh_command(daemon, user, *remote, source=BOB_IP,
                                        options=SHOW_BANNER),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def audit_file(daemon: TsshDaemon) -> list[dict[str, Any]]:
    """The audit log's entries (docs/audit.md)."""
    path = daemon.state_dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def audit(daemon: TsshDaemon, event: str) -> list[dict[str, object]]:
    return [e for e in daemon.log_entries()
            if e.get("logger") == "tssh.audit" and e.get("event") == event]


def test_held_approved_then_remembered(start: Any, local_user: LocalUser) -> None:
    daemon = start("1h")
    client = held_ssh(daemon, local_user.name, "id -un")
    try:
        hold = wait_held(daemon)
        assert hold["login"] == hold["localUser"] == local_user.name
        assert hold["node"] == "bobpc" and hold["url"] is None
        since = calendar.timegm(time.strptime(hold["since"], "%Y-%m-%dT%H:%M:%SZ"))
        assert abs(since - time.time()) < 30
        assert client.poll() is None  # still waiting
        approved = daemon.tssh("check", "approve", hold["id"])
        assert approved.returncode == 0, approved.stderr
        assert f"approved {local_user.name} from bobpc until " in approved.stdout
        out, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, err
    assert out == f"{local_user.name}\n".encode()
    assert f"tssh: approval required for {local_user.name}@server: {hold['id']}".encode() in err
    assert pending(daemon) == []
    # Inside the period the next login goes straight in, no banner, nothing held.
    again = run_ssh(daemon, local_user.name, "echo again", source=BOB_IP, options=SHOW_BANNER)
    assert again.returncode == 0 and again.stdout == b"again\n"
    assert b"approval required" not in again.stderr
    # tssh status lists the approval and its expiry; every step is audited.
    approvals = daemon.status()["checks"]["approvals"]  # type: ignore[index]
    assert [(a["login"], a["node"], a["period"]) for a in approvals] == [
        (local_user.name, "bobpc", "1h")]
    assert approvals[0]["expires"].endswith("Z")
    status = daemon.tssh("status")
    assert "checks:" in status.stdout and local_user.name in status.stdout
    assert [e["check"] for e in audit(daemon, "check.held")] == [hold["id"]]
    assert [e["check"] for e in audit(daemon, "check.approved")] == [hold["id"]]
    # In the audit log, the hold and its approval name the connection that waited, and its
    # acceptance follows them.
    entries = audit_file(daemon)
    [held] = [e for e in entries if e["event"] == "check.held"]
    [approved_line] = [e for e in entries if e["event"] == "check.approved"]
    conn = held["connectionID"]
    assert conn and approved_line["connectionID"] == conn
    assert (held["node"], held["user"], held["localUser"], held["address"]) == (
        "bobpc", "bob@example.com", local_user.name, BOB_IP)
    [accepted] = [e for e in entries if e["event"] == "connection.accepted"
                  and e["connectionID"] == conn]
    assert accepted["action"] == "check" and accepted["approval"] == approved_line["check"]
    # The approvals file: private, and read again by the next daemon (below).
    path = daemon.state_dir / "check-approvals.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    daemon.stop()
    daemon.start()
    after = run_ssh(daemon, local_user.name, "echo restarted", source=BOB_IP)
    assert after.returncode == 0 and after.stdout == b"restarted\n"
    assert pending(daemon) == []


def test_short_period_asks_again_and_deny_refuses(start: Any, local_user: LocalUser) -> None:
    daemon = start("2s")
    first = held_ssh(daemon, local_user.name, "true")
    try:
        hold = wait_held(daemon)
        assert daemon.tssh("check", "approve", hold["id"]).returncode == 0
        assert first.wait(20) == 0
    finally:
        if first.poll() is None:
            first.kill()
    time.sleep(2.5)  # the approval has lapsed: asked again
    second = held_ssh(daemon, local_user.name, "echo not-reached")
    try:
        hold2 = wait_held(daemon)
        assert hold2["id"] != hold["id"]
        denied = daemon.tssh("check", "deny", hold2["id"])
        assert denied.returncode == 0 and "denied" in denied.stdout
        out, err = second.communicate(timeout=20)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 255 and out == b""
    assert (f"tssh: approval for {local_user.name}@server was denied: login refused".encode()
            in err)
    assert [e["check"] for e in audit(daemon, "check.denied")] == [hold2["id"]]
    # A decided id is gone.
    again = daemon.tssh("check", "approve", hold2["id"])
    assert again.returncode == 1 and "no login held" in again.stderr


def test_always_asks_every_time(start: Any, local_user: LocalUser) -> None:
    daemon = start("always")
    for _ in range(2):
        client = held_ssh(daemon, local_user.name, "true")
        try:
            hold = wait_held(daemon)
            assert daemon.tssh("check", "approve", hold["id"]).returncode == 0
            assert client.wait(20) == 0
        finally:
            if client.poll() is None:
                client.kill()
    assert daemon.status()["checks"]["approvals"] == []  # type: ignore[index]


def test_timeout_refuses(start: Any, local_user: LocalUser) -> None:
    daemon = start("1h", "--check-timeout", "2")
    result = run_ssh(daemon, local_user.name, "echo not-reached", source=BOB_IP,
                     options=SHOW_BANNER, timeout=30)
    assert result.returncode == 255 and result.stdout == b""
    assert b"tssh: approval required for" in result.stderr
    assert (f"tssh: approval for {local_user.name}@server not given within 2 s: login "
            "refused".encode() in result.stderr)
    assert pending(daemon) == []
    assert len(audit(daemon, "check.timeout")) == 1


def test_client_that_quits_leaves_no_hold(start: Any, local_user: LocalUser) -> None:
    daemon = start("1h")
    client = held_ssh(daemon, local_user.name, "true")
    try:
        hold = wait_held(daemon)
    finally:
        client.terminate()
        client.wait(10)
    wait_for(lambda: pending(daemon) == [], 15, 0.2, what="the hold gone")
    assert [e["check"] for e in audit(daemon, "check.abandoned")] == [hold["id"]]
    assert daemon.tssh("check", "approve", hold["id"]).returncode == 1


def test_revoke_ends_the_live_connection(start: Any, local_user: LocalUser) -> None:
    daemon = start("1h")
    client = held_ssh(daemon, local_user.name, "echo started; sleep 60; echo not-reached")
    try:
        hold = wait_held(daemon)
        assert daemon.tssh("check", "approve", hold["id"]).returncode == 0
        assert client.stdout is not None
        assert client.stdout.readline() == b"started\n"
        revoked = daemon.tssh("check", "revoke", "--login", local_user.name)
        assert revoked.returncode == 0, revoked.stderr
        assert "revoked 1 approval(s); ended 1 connection(s)" in revoked.stdout
        out, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
    assert b"not-reached" not in out
    assert b"tssh: access revoked: the check approval for this login was revoked" in out + err
    assert daemon.status()["checks"]["approvals"] == []  # type: ignore[index]
    # The approval dropped, then the connection it admitted ended (with its id).
    dropped, ended = audit(daemon, "access.revoked")
    assert dropped["approval"] == ended["approval"] is not None
    assert dropped.get("conn") is None and str(ended["conn"]).startswith("ssh-conn-")
    [line] = [e for e in audit_file(daemon) if e["event"] == "access.revoked"
              and e["connectionID"] is not None]
    assert line["reason"] and line["localUser"] == local_user.name
    # The next login is held again.
    again = held_ssh(daemon, local_user.name, "true")
    try:
        wait_held(daemon)
    finally:
        again.kill()
        again.wait(10)


def test_policy_change_removing_the_rule_ends_its_connection(
        start: Any, local_user: LocalUser) -> None:
    daemon = start("1h")
    client = held_ssh(daemon, local_user.name, "echo started; sleep 60; echo not-reached")
    try:
        hold = wait_held(daemon)
        assert daemon.tssh("check", "approve", hold["id"]).returncode == 0
        assert client.stdout is not None
        assert client.stdout.readline() == b"started\n"
        daemon.policy.write_text(json.dumps({
            "tagOwners": {"tag:prod": ["alice@example.com"]}, "ssh": []}))
        out, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
    assert b"tssh: access revoked by a policy change" in out + err


# Tailscale's default tailnet policy file (kb/1193 "Tailscale SSH", kb/1337 "ssh"), as
# published: members may SSH to their own devices, after a check.
TAILSCALE_DEFAULT_POLICY = """{
  // Define access control lists for users, groups, autogroups, tags,
  // Tailscale IP addresses, and subnet ranges.
  "acls": [
    // Allow all connections.
    {"action": "accept", "src": ["*"], "dst": ["*:*"]},
  ],

  // Define users and devices that can use Tailscale SSH.
  "ssh": [
    // Allow all users to SSH into their own devices in check mode.
    {
      "action": "check",
      "src":    ["autogroup:member"],
      "dst":    ["autogroup:self"],
      "users":  ["autogroup:nonroot", "root"],
    },
  ],
}
"""


def test_tailscale_default_policy_loads_and_checks(daemon_factory: DaemonFactory,
                                                   local_user: LocalUser) -> None:
    netmap = json.loads(json.dumps(NETMAP))
    for node in netmap["nodes"]:
        if node["name"] == "server":  # bob's own device
            del node["tags"]
            node["user"] = "bob@example.com"
    daemon_factory.netmap.write_text(json.dumps(netmap))
    daemon_factory.policy.write_text(TAILSCALE_DEFAULT_POLICY)
    daemon = daemon_factory()
    client = held_ssh(daemon, local_user.name, "id -un")
    try:
        hold = wait_held(daemon)
        assert daemon.tssh("check", "approve", hold["id"]).returncode == 0
        out, _err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
    assert out == f"{local_user.name}\n".encode()
    # The default checkPeriod (12h) remembers it.
    assert run_ssh(daemon, local_user.name, "echo again", source=BOB_IP).stdout == b"again\n"
    assert Path(daemon.policy).read_text() == TAILSCALE_DEFAULT_POLICY
    assert SERVER_IP in daemon.status()["addresses"]  # type: ignore[operator]


def test_policy_change_while_held_decides_the_login_anew(
        start: Any, local_user: LocalUser) -> None:
    """Held, then the check rule becomes an accept rule: the login goes in unapproved."""
    daemon = start("1h")
    client = held_ssh(daemon, local_user.name, "echo in")
    try:
        hold = wait_held(daemon)
        daemon.policy.write_text(check_policy(local_user.name, "1h").replace(
            '"check"', '"accept"').replace(', "checkPeriod": "1h"', ""))
        out, err = client.communicate(timeout=20)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0 and out == b"in\n", err
    assert pending(daemon) == []
    assert [e["check"] for e in audit(daemon, "check.dropped")] == [hold["id"]]


def test_oidc_approval_by_the_nodes_user(daemon_factory: DaemonFactory,
                                         local_user: LocalUser) -> None:
    """The banner's URL starts the code flow; the provider's bob@example.com (the source
    node's user) approves; alice signing in does not."""
    from tests.fake_oidc import FakeOidc
    from tests.ports import free_port

    with FakeOidc() as idp:
        port = free_port(SERVER_IP)
        daemon_factory.policy.write_text(check_policy(local_user.name, "1h"))
        daemon = daemon_factory(extra_args=[
            "--check-oidc-issuer", idp.issuer, "--check-oidc-client-id", idp.client_id,
            "--check-port", str(port)])
        client = held_ssh(daemon, local_user.name, "echo in")
        try:
            hold = wait_held(daemon)
            url = f"http://{SERVER_IP}:{port}/check/{hold['id']}"
            assert hold["url"] == url
            with httpx.Client(follow_redirects=True, timeout=20) as browser:
                idp.user = "alice@example.com"
                refused = browser.get(url)
                assert refused.status_code == 403 and "signed in as alice" in refused.text
                assert [h["id"] for h in pending(daemon)] == [hold["id"]]
                idp.user = "bob@example.com"
                page = browser.get(url)
                assert page.status_code == 200 and "approved" in page.text, page.text
            out, err = client.communicate(timeout=20)
        finally:
            if client.poll() is None:
                client.kill()
    assert out == b"in\n", err
    assert f"at {url}".encode() in err
    approved = audit(daemon, "check.approved")
    assert [(e["via"], e["approver"]) for e in approved] == [("oidc", "bob@example.com")]
    assert len(audit(daemon, "check.oidc_refused")) == 1
