"""Local account state as sshd with PAM judges it, and the session's terminal as sshd sets it.

Real throw-away accounts changed with the system's own tools (usermod, passwd), the stock
ssh client against a real daemon, which reads the shadow file at each login.
"""

from __future__ import annotations

import datetime
import grp
import json
import subprocess

import pytest

from tests.e2e.conftest import (
    ALICE_IP,
    LocalUser,
    TsshDaemon,
    nonroot_daemon,
    require_tool,
    run_ssh,
    ssh_command,
)

DAY = datetime.timedelta(days=1)


def _utc_today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def _shadow_expiry(user: str) -> str:
    """The expiry field of the user's shadow line, as the tools wrote it."""
    line = subprocess.run(["getent", "shadow", user], capture_output=True, text=True,
                          check=True).stdout.strip()
    return line.split(":")[7]


def _set_expiry(user: str, date: datetime.date | None) -> None:
    subprocess.run(["usermod", "-e", date.isoformat() if date else "", user], check=True)
    expected = str((date - datetime.date(1970, 1, 1)).days) if date else ""
    assert _shadow_expiry(user) == expected  # what the daemon will read


def _admitted(daemon: TsshDaemon, user: LocalUser) -> None:
    result = run_ssh(daemon, user.name, "id -un")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{user.name}\n".encode()


def test_expired_account_refused_until_the_expiry_is_removed(
    daemon: TsshDaemon, local_user: LocalUser
) -> None:
    require_tool("usermod")
    if _utc_today() != datetime.date.today():
        pytest.skip(reason="usermod -e takes local dates; this test counts in UTC")
    name = local_user.name
    _admitted(daemon, local_user)  # no expiry date

    _set_expiry(name, _utc_today() - DAY)
    result = run_ssh(daemon, name, "id -un")
    assert result.returncode == 255
    assert f'tssh: account "{name}" has expired on this node'.encode() in result.stderr
    assert result.stdout == b""

    _set_expiry(name, _utc_today() + DAY)  # the last day is today
    _admitted(daemon, local_user)

    _set_expiry(name, datetime.date(1970, 1, 2))  # usermod(8): "-e 1" locks key logins too
    assert run_ssh(daemon, name, "true").returncode == 255

    _set_expiry(name, None)  # no daemon restart: the shadow file is read at each login
    _admitted(daemon, local_user)

    entries = daemon.log_entries()
    audited = [e for e in entries if e.get("event") == "account.expired"]
    assert [e["expired_on"] for e in audited] == [
        (_utc_today() - DAY).isoformat(), "1970-01-02"]
    assert all(e["local_user"] == name and e["logger"] == "tssh.audit" for e in audited)
    # In the audit log each names the connection it refused (found in a worker thread,
    # with the connection in scope: docs/audit.md).
    lines = [json.loads(line) for line in
             (daemon.state_dir / "audit.jsonl").read_text().splitlines()]
    expired = [e for e in lines if e["event"] == "account.expired"]
    refusals = {e["connectionID"]: e for e in lines if e["event"] == "connection.refused"}
    assert len(expired) == 2 and all(e["connectionID"] in refusals for e in expired)
    assert all(e["localUser"] == name and e["address"] == ALICE_IP for e in expired)
    refused = [e for e in entries if e.get("msg") == "login refused"]
    assert [e["reason"] for e in refused] == [
        f'account "{name}" has expired on this node'] * 2
    started = [e for e in entries if e.get("msg") == "session started"]
    assert len(started) == 3


def test_locked_password_and_password_change_do_not_stop_a_keyless_login(
    daemon: TsshDaemon, local_user: LocalUser
) -> None:
    """As sshd with PAM for a key login: a locked password (``usermod -L``) is no lock for
    logins that never use it, and tssh cannot run a password change, so a required one
    (``passwd -e``) does not refuse either."""
    require_tool("passwd")
    name = local_user.name
    subprocess.run(["usermod", "-p", "$6$salt$hash", name], check=True)
    subprocess.run(["usermod", "-L", name], check=True)
    subprocess.run(["passwd", "-e", name], check=True, capture_output=True)
    fields = subprocess.run(["getent", "shadow", name], capture_output=True, text=True,
                            check=True).stdout.split(":")
    assert fields[1].startswith("!") and fields[2] == "0"
    _admitted(daemon, local_user)


def test_inactive_account_refused(daemon: TsshDaemon, local_user: LocalUser) -> None:
    """Password expired longer ago than the inactivity period: pam_unix refuses every
    login."""
    require_tool("chage")
    name = local_user.name
    last_change = (_utc_today() - 40 * DAY).isoformat()
    subprocess.run(["chage", "-d", last_change, "-M", "20", "-I", "10", name], check=True)
    result = run_ssh(daemon, name, "true")
    assert result.returncode == 255
    assert f'tssh: account "{name}" is disabled on this node'.encode() in result.stderr
    subprocess.run(["chage", "-I", "-1", name], check=True)  # no inactivity period
    _admitted(daemon, local_user)


def test_session_tty_owned_as_with_openssh(daemon: TsshDaemon, local_user: LocalUser) -> None:
    try:
        tty_group: str | None = grp.getgrnam("tty").gr_name
    except KeyError:
        tty_group = None
    result = run_ssh(daemon, local_user.name, 'stat -c "%U %G %a" "$(tty)"; mesg',
                     options=("-tt",))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    if tty_group is not None:
        assert lines == [f"{local_user.name} {tty_group} 620", "is y"]
    else:
        primary = grp.getgrgid(local_user.gid).gr_name
        assert lines == [f"{local_user.name} {primary} 600", "is n"]


def test_tty_group_may_write_to_the_session_tty(
    daemon: TsshDaemon, local_user: LocalUser
) -> None:
    """What 0620 and group tty are for: write(1) and wall(1) run with group tty and reach
    the session's terminal; other users still cannot."""
    try:
        tty_gid = grp.getgrnam("tty").gr_gid
    except KeyError:
        pytest.skip(reason="this system has no tty group")
    setpriv = require_tool("setpriv")
    session = subprocess.Popen(
        ssh_command(daemon, local_user.name, "tty; sleep 20", options=("-tt",)),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert session.stdout is not None
        tty = session.stdout.readline().decode().strip()
        assert tty.startswith("/dev/pts/"), tty

        def write_as(gid: int, text: str) -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [setpriv, "--reuid=65534", f"--regid={gid}", "--clear-groups",
                 "sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", text, tty],
                capture_output=True, timeout=10,
            )

        assert write_as(65534, "from a stranger").returncode != 0
        sent = write_as(tty_gid, "hello from group tty")
        assert sent.returncode == 0, sent.stderr
        assert session.stdout.readline() == b"hello from group tty\r\n"
    finally:
        session.kill()
        session.wait()


def test_daemon_as_normal_user_skips_the_expiry_check_and_keeps_its_tty_group(
    local_user: LocalUser,
) -> None:
    """A daemon that is not root cannot read the shadow file (it serves only its own account,
    expired or not), and cannot give the terminal to group tty: user's group, 0600."""
    _set_expiry(local_user.name, datetime.date(1970, 1, 2))
    with nonroot_daemon(local_user, [local_user.name]) as d:
        result = run_ssh(d, local_user.name, 'stat -c "%U %G %a" "$(tty)"', options=("-tt",))
    assert result.returncode == 0, result.stderr
    primary = grp.getgrgid(local_user.gid).gr_name
    assert result.stdout.decode().splitlines() == [f"{local_user.name} {primary} 600"]
