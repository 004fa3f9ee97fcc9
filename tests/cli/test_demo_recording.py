"""The demo's generated netmap and policy, with and without a demo recorder node."""

from __future__ import annotations

from pathlib import Path

from tssh.cli.demo import LAPTOP_ADDRESS, RECORDER_ADDRESS, SERVER_ADDRESS, demo_files
from tssh.identity.netmap import NetmapResolver
from tssh.policy import Decision, evaluate, load_policy
from tssh.recording.targets import RecorderAddress, recorder_targets


async def _decide(netmap: Path, policy: Path, login: str
                  ) -> tuple[Decision, list[RecorderAddress]]:
    resolver = NetmapResolver.from_file(netmap)
    try:
        src = await resolver.whois(LAPTOP_ADDRESS)
        dst = await resolver.self_node()
        peers = await resolver.peers()
    finally:
        await resolver.close()
    decision = evaluate(load_policy(policy), src, dst, login)
    return decision, recorder_targets(decision.recorders, peers, 8080)


async def test_demo_without_recorder_records_nothing(tmp_path: Path) -> None:
    netmap, policy = demo_files(tmp_path, "alice")
    decision, targets = await _decide(netmap, policy, "alice")
    assert decision.action == "accept"
    assert decision.local_user == "alice"
    assert decision.recorders == ()
    assert targets == []


async def test_demo_with_recorder_records_every_session_to_it(tmp_path: Path) -> None:
    netmap, policy = demo_files(tmp_path, "alice", recorder_address=RECORDER_ADDRESS,
                                enforce_recorder=True)
    decision, targets = await _decide(netmap, policy, "alice")
    assert decision.action == "accept"
    assert decision.recorders == ("tag:recorder",)
    assert decision.enforce_recorder is True
    assert targets == [RecorderAddress(RECORDER_ADDRESS, 8080)]
    assert RECORDER_ADDRESS not in (SERVER_ADDRESS, LAPTOP_ADDRESS)
