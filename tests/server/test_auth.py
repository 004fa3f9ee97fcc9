"""The per-connection decision: policy outcome, local account, the root-or-self rule."""

from __future__ import annotations

import asyncssh
import asyncssh.constants
import pytest

from tssh.errors import IdentityError
from tssh.identity.base import Peer
from tssh.policy import parse_policy
from tssh.policy.decider import FileDecider
from tssh.server.account import Account, AccountError, AccountExpiredError
from tssh.server.auth import Admission, TsshServer, decide
from tssh.server.limits import ConnectionLimits
from tssh.server.screen import Screened
from tssh.server.session import HungUpGroups, ProcessSession

SERVER = Peer(name="server", id="nS", addresses=("127.0.0.10",), tags=("tag:prod",))
ALICE = Peer(name="laptop", id="nA", addresses=("127.0.0.2",), user="alice@example.com")
BOB = Peer(name="bobpc", id="nB", addresses=("127.0.0.3",), user="bob@example.com")
POLICY = FileDecider(parse_policy("""{
  "tagOwners": {"tag:prod": ["alice@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:prod"],
     "users": ["autogroup:nonroot"], "acceptEnv": ["FOO_*"]},
    {"action": "check", "src": ["bob@example.com"], "dst": ["tag:prod"], "users": ["bob"]},
  ],
}"""))


def _account(name: str, uid: int = 1000) -> Account:
    return Account(name=name, uid=uid, gid=uid, groups=(uid,), home=f"/home/{name}",
                   shell="/bin/sh")


def _lookup(name: str) -> Account:
    if name == "ghost":
        raise AccountError("no local user 'ghost' on this node")
    return _account(name, 0 if name == "root" else 1000)


def test_accept_maps_account_and_accept_env() -> None:
    admission = decide(POLICY, ALICE, "127.0.0.2", SERVER, "alice", lookup=_lookup,
                       daemon_uid=0)
    assert admission.accepted and admission.account == _account("alice")
    assert admission.decision is not None and admission.decision.accept_env == ("FOO_*",)


def test_unknown_peer() -> None:
    admission = decide(POLICY, None, "127.0.0.9", SERVER, "alice", lookup=_lookup)
    assert not admission.accepted
    assert admission.message == "unknown peer 127.0.0.9: not a node of this tailnet"


def test_policy_rejection_message_passes_through() -> None:
    admission = decide(POLICY, ALICE, "127.0.0.2", SERVER, "root", lookup=_lookup,
                       daemon_uid=0)
    assert not admission.accepted
    assert admission.message == 'tailnet policy does not permit you to SSH as user "root"'


def test_check_rule_maps_the_account_and_needs_a_check() -> None:
    admission = decide(POLICY, BOB, "127.0.0.3", SERVER, "bob", lookup=_lookup, daemon_uid=0)
    assert admission.account == _account("bob") and admission.message is None
    assert admission.check_needed and not admission.accepted
    # A login the account rules refuse is refused before any hold.
    ghost = decide(FileDecider(parse_policy("""{"tagOwners": {"tag:prod": ["bob@example.com"]},
      "ssh": [{"action": "check", "src": ["bob@example.com"], "dst": ["tag:prod"],
               "users": ["ghost"]}]}""")), BOB, "127.0.0.3", SERVER, "ghost", lookup=_lookup,
                   daemon_uid=0)
    assert ghost.account is None and not ghost.check_needed
    assert ghost.message == "no local user 'ghost' on this node"


def test_missing_local_account() -> None:
    """autogroup:nonroot does not match a login with no account (docs/policy.md)."""
    admission = decide(POLICY, ALICE, "127.0.0.2", SERVER, "ghost", lookup=_lookup,
                       daemon_uid=0)
    assert admission.message == 'tailnet policy does not permit you to SSH as user "ghost"'


@pytest.mark.parametrize(("login", "accepted"), [("alice", True), ("carol", False)])
def test_non_root_daemon_serves_only_its_own_user(login: str, accepted: bool) -> None:
    def lookup(name: str) -> Account:
        return _account(name, 1000 if name == "alice" else 1001)

    admission = decide(POLICY, ALICE, "127.0.0.2", SERVER, login, lookup=lookup,
                       daemon_uid=1000, daemon_name="alice")
    assert admission.accepted is accepted
    if not accepted:
        assert admission.message == (
            "this tssh daemon runs as 'alice', not root, and can only start sessions as "
            "'alice', not as 'carol'"
        )


def test_account_check_refusal_reaches_the_client_message() -> None:
    checked: list[str] = []

    def expired(account: Account) -> None:
        checked.append(account.name)
        raise AccountExpiredError(f'account "{account.name}" has expired on this node')

    admission = decide(POLICY, ALICE, "127.0.0.2", SERVER, "alice", lookup=_lookup,
                       check_account=expired, daemon_uid=0)
    assert not admission.accepted
    assert admission.message == 'account "alice" has expired on this node'
    assert admission.decision is not None and admission.decision.action == "accept"
    # Only the account the login maps to is checked, and only once the policy accepts it.
    assert checked == ["alice"]
    refused = decide(POLICY, ALICE, "127.0.0.2", SERVER, "root", lookup=_lookup,
                     check_account=expired, daemon_uid=0)
    assert refused.message == 'tailnet policy does not permit you to SSH as user "root"'
    assert checked == ["alice"]
    # None: no check (a policy change re-deciding a live connection).
    assert decide(POLICY, ALICE, "127.0.0.2", SERVER, "alice", lookup=_lookup,
                  check_account=None, daemon_uid=0).accepted


def test_no_policy_loaded() -> None:
    admission = decide(None, ALICE, "127.0.0.2", SERVER, "alice", lookup=_lookup)
    assert admission.message == "no valid policy is loaded on this node"


class _FakeConn:
    def __init__(self) -> None:
        self.banners: list[str] = []
        self.disconnected: tuple[int, str] | None = None
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> tuple[str, int]:
        return ("127.0.0.2", 50000) if name == "peername" else ("127.0.0.10", 22)

    def send_auth_banner(self, text: str) -> None:
        self.banners.append(text)

    def disconnect(self, code: int, reason: str) -> None:
        self.disconnected = (code, reason)


class _Gate:
    def __init__(self, fail: bool = False, full: bool = False) -> None:
        self.fail = fail
        self.full = full  # as when too many connections are logging in
        self.opened = 0
        self.logged_in = 0
        self.whois_calls = 0
        self.current = True  # the accept-time answer stands

    async def whois(self, address: str) -> Peer | None:
        self.whois_calls += 1
        if self.fail:
            raise IdentityError("tailscaled is not running")
        return ALICE if address == "127.0.0.2" else None

    def still_current(self, screened: Screened) -> bool:
        return self.current

    async def policy_settled(self) -> bool:
        return True

    async def admit(self, peer: Peer | None, peer_ip: str, login: str) -> Admission:
        return decide(POLICY, peer, peer_ip, SERVER, login, lookup=_lookup, daemon_uid=0)

    def connection_opened(self, server: TsshServer) -> bool:
        if self.full:
            return False
        self.opened += 1
        return True

    def login_finished(self, server: TsshServer) -> None:
        self.logged_in += 1

    def connection_closed(self, server: TsshServer) -> None:
        self.opened -= 1

    @property
    def hung_up_groups(self) -> HungUpGroups:
        return HungUpGroups()


async def test_server_admits_from_first_auth_request() -> None:
    conn, gate = _FakeConn(), _Gate()
    server = TsshServer(gate)
    server.connection_made(conn)
    assert await server.begin_auth("alice") is False  # no further authentication needed
    assert server.context is not None and server.context.account.name == "alice"
    assert server.context.accept_env == ("FOO_*",) and conn.disconnected is None
    assert gate.logged_in == 1
    server.connection_lost(None)
    assert gate.opened == 0


async def test_server_closes_a_connection_the_daemon_refuses_at_once() -> None:
    conn, gate = _FakeConn(), _Gate(full=True)
    server = TsshServer(gate)
    server.connection_made(conn)
    assert conn.aborted
    assert await server.begin_auth("alice") is True  # in case asyncssh still asks
    assert server.context is None and gate.logged_in == 0


async def test_server_refuses_with_banner_then_disconnects() -> None:
    conn = _FakeConn()
    server = TsshServer(_Gate())
    server.connection_made(conn)
    assert await server.begin_auth("root") is True
    assert conn.banners == ['tssh: tailnet policy does not permit you to SSH as user "root"\r\n']
    assert conn.disconnected is not None and conn.disconnected[1].startswith("tssh: ")
    assert server.context is None and server.session_requested() is False


async def test_identity_backend_failure_is_not_called_an_unknown_peer() -> None:
    conn = _FakeConn()
    server = TsshServer(_Gate(fail=True))
    server.connection_made(conn)
    assert await server.begin_auth("alice") is True
    assert conn.banners and "identity source is not answering" in conn.banners[0]


def _lookup_with_toor(name: str) -> Account:
    return _account("toor", 0) if name == "toor" else _lookup(name)


FALL_THROUGH = FileDecider(parse_policy("""{
  "tagOwners": {"tag:prod": ["alice@example.com"]},
  "ssh": [
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:prod"],
     "users": ["autogroup:nonroot"]},
    {"action": "accept", "src": ["alice@example.com"], "dst": ["tag:prod"],
     "users": ["ghost", "toor"], "acceptEnv": ["RULE_1"]},
  ],
}"""))


@pytest.mark.parametrize("login", ["ghost", "toor"])
def test_nonroot_skips_uid0_aliases_and_missing_accounts_to_later_rules(login: str) -> None:
    """docs/policy.md: ``autogroup:nonroot`` does not match root, any uid-0 account or a login
    with no local account, so later rules are tried -- judged by the same account lookup
    the session would use."""
    admission = decide(FALL_THROUGH, ALICE, "127.0.0.2", SERVER, login,
                       lookup=_lookup_with_toor, daemon_uid=0)
    assert admission.decision is not None and admission.decision.accept_env == ("RULE_1",)
    if login == "toor":  # named explicitly by the second rule: allowed, as uid 0
        assert admission.account == _account("toor", 0)
    else:
        assert admission.message == "no local user 'ghost' on this node"


@pytest.mark.parametrize("current", [True, False])
async def test_login_reuses_the_accept_time_answer_only_while_current(current: bool) -> None:
    conn, gate = _FakeConn(), _Gate()
    gate.current = current
    conn.screened = Screened("known", "127.0.0.2", ALICE)  # type: ignore[attr-defined]
    server = TsshServer(gate)
    server.connection_made(conn)
    assert await server.begin_auth("alice") is False
    assert gate.whois_calls == (0 if current else 1)


async def test_login_asks_again_after_a_backend_failure_at_accept() -> None:
    conn, gate = _FakeConn(), _Gate()
    gate.current = False  # as AcceptScreen.is_current says of an "error" answer
    conn.screened = Screened("error", "127.0.0.2", error="down")  # type: ignore[attr-defined]
    server = TsshServer(gate)
    server.connection_made(conn)
    assert await server.begin_auth("alice") is False  # tailscaled is back
    assert gate.whois_calls == 1


async def test_sessions_beyond_max_sessions_are_refused_with_a_reason() -> None:
    conn = _FakeConn()
    server = TsshServer(_Gate(), ConnectionLimits(max_sessions=2))
    server.connection_made(conn)
    assert await server.begin_auth("alice") is False
    first, second = server.session_requested(), server.session_requested()
    assert isinstance(first, ProcessSession) and isinstance(second, ProcessSession)
    with pytest.raises(asyncssh.ChannelOpenError) as refused:
        server.session_requested()
    assert refused.value.code == asyncssh.constants.OPEN_RESOURCE_SHORTAGE
    assert "at most 2 sessions per connection (max_sessions)" in refused.value.reason
    first.connection_lost(None)  # a session that ended makes room for the next
    assert isinstance(server.session_requested(), ProcessSession)
