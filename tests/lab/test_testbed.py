"""The lab itself: every service up where it should be, and its state file names exactly
what it started (what `python -m tests.lab down` ends)."""

from __future__ import annotations

import pytest

from tests.lab.testbed import RECORDER_PORT, RECORDERS, SERVERS, SSH_PORT, Testbed

pytestmark = pytest.mark.xdist_group("lab")


def test_services_listen_on_their_tailnet_addresses_only(lab: Testbed) -> None:
    for server in SERVERS:
        assert lab.lab.listening(server) == {lab.lab.bound_address(server, SSH_PORT)}
    assert lab.lab.listening("recdisk") == {lab.lab.bound_address("recdisk", RECORDER_PORT)}
    # recs3 also holds its S3 server, on its own loopback only
    assert lab.lab.listening("recs3") == {lab.lab.bound_address("recs3", RECORDER_PORT),
                                          "127.0.0.1:9000"}
    for recorder in RECORDERS:
        assert lab.api(recorder, "/api/v1/recordings")[0] == 200


def test_state_file_names_every_process_by_pid_and_start_time(lab: Testbed) -> None:
    path = lab.workdir / "state-test.json"
    lab.save(path)
    again = Testbed.load(path)
    assert {n: (s.pid, s.started, s.argv) for n, s in again.services.items()} == {
        n: (s.pid, s.started, s.argv) for n, s in lab.services.items()}
    assert all(s.running() for s in again.services.values())
    assert len(again.lab.foreign) == len(lab.lab.nodes)  # one wireguard-go per node
    assert sorted(again.lab.namespaces) == sorted(lab.lab.namespaces)
    assert again.accounts == [lab.enforced, lab.unenforced] and again.mounts == lab.mounts
