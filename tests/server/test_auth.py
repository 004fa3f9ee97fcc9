"""The per-connection decision: policy outcome, local account, the root-or-self rule."""

from __future__ import annotations

import pytest

from tssh.identity.base import Peer
from tssh.policy import parse_policy
from tssh.policy.decider import FileDecider
from tssh.server.account import Account, AccountError
from tssh.server.auth import CHECK_UNAVAILABLE, decide

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


def test_check_is_refused_for_now() -> None:
    admission = decide(POLICY, BOB, "127.0.0.3", SERVER, "bob", lookup=_lookup, daemon_uid=0)
    assert not admission.accepted and admission.message == CHECK_UNAVAILABLE


def test_missing_local_account() -> None:
    admission = decide(POLICY, ALICE, "127.0.0.2", SERVER, "ghost", lookup=_lookup,
                       daemon_uid=0)
    assert admission.message == "no local user 'ghost' on this node"


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


def test_no_policy_loaded() -> None:
    admission = decide(None, ALICE, "127.0.0.2", SERVER, "alice", lookup=_lookup)
    assert admission.message == "no valid policy is loaded on this node"
