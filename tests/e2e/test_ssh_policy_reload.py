"""The daemon follows its policy file: a good edit applies (live connections re-checked),
a broken one is refused with its position and the last good policy stays in force."""

from __future__ import annotations

import copy
import json
import time

from tests.e2e.conftest import NETMAP, POLICY, TsshDaemon, live_session, run_ssh
from tests.polling import wait_for

ONLY_NONROOT = POLICY.replace('"users": ["autogroup:nonroot", "root"]',
                              '"users": ["autogroup:nonroot"]')


def _policy_error(daemon: TsshDaemon) -> object:
    policy = daemon.status()["policy"]
    assert isinstance(policy, dict)
    return policy["error"]


def test_broken_edit_keeps_last_good_policy(daemon: TsshDaemon) -> None:
    daemon.policy.write_text('{\n  "ssh": [\n    {"action": "accept",,}\n  ]\n}\n')
    wait_for(lambda: _policy_error(daemon) is not None, 8, 0.1, what="the policy error")
    error = str(_policy_error(daemon))
    assert error.startswith(f"{daemon.policy}:3:")
    assert run_ssh(daemon, "root", "echo still").stdout == b"still\n"
    logged = [e for e in daemon.log_entries() if e.get("level") == "error"]
    assert logged and error in str(logged[-1]["msg"])

    daemon.policy.write_text(POLICY)  # fixed: the error clears
    wait_for(lambda: _policy_error(daemon) is None, 8, 0.1, what="the error cleared")


def test_edit_revokes_live_connection_and_refuses_new_ones(daemon: TsshDaemon) -> None:
    with live_session(daemon) as session:
        time.sleep(0.05)
        daemon.policy.write_text(ONLY_NONROOT)
        out, err = session.communicate(timeout=15)
    assert b"not-reached" not in out
    assert b"tssh: access revoked by a policy change" in out + err
    refused = run_ssh(daemon, "root", "true")
    assert refused.returncode == 255 and b"tssh: " in refused.stderr


def _netmap_with(daemon: TsshDaemon, **laptop: object) -> str:
    netmap = copy.deepcopy(NETMAP)
    for node in netmap["nodes"]:  # type: ignore[union-attr]
        if node["name"] == "laptop":  # type: ignore[index]
            node.update(laptop)  # type: ignore[union-attr]
    return json.dumps(netmap)


def test_netmap_edit_re_checks_live_connections(daemon: TsshDaemon) -> None:
    """The netmap file is followed as the policy is: a node whose owner changed to someone
    the policy does not admit loses its live connection; a broken edit is logged once and
    the last good netmap stays in force."""
    daemon.netmap.write_text("{ broken")
    wait_for(lambda: any("identity file not reloaded" in str(e.get("msg"))
                         for e in daemon.log_entries()), 8, 0.1, what="the netmap error")
    assert run_ssh(daemon, "root", "echo still").stdout == b"still\n"
    time.sleep(2.5)  # two more polls of the same broken file: not reported again
    errors = [e for e in daemon.log_entries() if "identity file not reloaded" in str(e.get("msg"))]
    assert len(errors) == 1, errors
    daemon.netmap.write_text(json.dumps(NETMAP))
    with live_session(daemon) as session:
        time.sleep(0.05)
        daemon.netmap.write_text(_netmap_with(daemon, user="carol@example.com"))
        out, err = session.communicate(timeout=15)
    assert b"not-reached" not in out
    assert b"tssh: access revoked by a policy change" in out + err
    assert run_ssh(daemon, "root", "true").returncode == 255  # laptop is carol's now
