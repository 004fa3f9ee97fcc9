"""Load and abuse on a WireGuard lab (issue 15, section 5): a connection flood from a node
with no rights while an authorized user types, garbage before and during the handshake, and
slowloris on the daemon. Each is bounded in count and time; TSSH_LAB_LONG=1 runs the full
counts. The daemon must refuse, close or time out what it should, stay up, log it, and let
a real login through (docs/daemon.md, "Limits")."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.bench_ssh import Target, bench_user, percentile, tssh_daemon
from tests.e2e.conftest import require_tool
from tests.identity.wglab import Lab, build_lab, lab_unavailable_reason
from tests.lab import typist
from tests.lab.link import server_place
from tests.lab.results import Outcome, long_run, record

pytestmark = pytest.mark.xdist_group("lab")

SECTION = "Load and abuse"
RERUN = "sudo .venv/bin/python -m pytest -n 0 tests/lab/test_abuse.py"
REPO = Path(__file__).resolve().parents[2]
GRACE = 3  # login_grace_time for these tests (seconds)
PER_SOURCE = 32  # the daemon's default per_source_max_startups


@dataclass
class Abuse:
    lab: Lab
    tssh: Target
    user: str
    log: Path

    def hostile(self, node: str, *args: str, timeout: float = 120) -> dict[str, object]:
        """Run one of tests/lab/hostile.py's tools on ``node``; its JSON summary."""
        out = subprocess.run(self.lab.exec_argv(node, sys.executable, "-m",
                                                "tests.lab.hostile", *args),
                             capture_output=True, timeout=timeout, cwd=REPO)
        assert out.returncode == 0, out.stderr[-3000:]
        result: dict[str, object] = json.loads(out.stdout)
        return result

    def alive(self) -> bool:
        return subprocess.run(["kill", "-0", str(self.tssh.pid)]).returncode == 0

    def login(self) -> tuple[bool, float]:
        start = time.perf_counter()
        result = subprocess.run(self.tssh.ssh(self.user, "echo in"), capture_output=True,
                                timeout=60)
        return result.returncode == 0 and result.stdout == b"in\n", \
            time.perf_counter() - start

    def log_entries(self) -> list[dict[str, object]]:
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue
        return entries


@pytest.fixture(scope="module")
def abuse() -> Iterator[Abuse]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason=f"WireGuard lab unavailable: {reason}")
    for tool in ("ssh", "useradd"):
        require_tool(tool)
    lab = build_lab(["client", "server", "intruder"])
    try:
        with tempfile.TemporaryDirectory(prefix="lab-abuse-") as tmp, bench_user() as user:
            work = Path(tmp)
            work.chmod(0o755)
            with tssh_daemon(work, user, server_place(lab, 22),
                             strangers=(lab.nodes["intruder"].address,),
                             extra=("--login-grace-time", str(GRACE),
                                    "--log-level", "info")) as tssh:
                yield Abuse(lab, tssh, user, work / "tssh.log")
    finally:
        lab.close()


def test_connection_flood_from_a_node_with_no_rights(abuse: Abuse) -> None:
    count, seconds = (1000, 10.0) if long_run() else (200, 4.0)
    before_s = 3.0
    server = abuse.tssh.ip
    typing = subprocess.Popen(
        typist.command(abuse.lab.exec_argv("client"), server, abuse.tssh.port, abuse.user,
                       seconds=before_s + seconds + 3, interval=0.05),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        time.sleep(before_s + 1.0)  # connected and typing for a few seconds
        flood_start = time.time()
        flood = abuse.hostile("intruder", "flood", server, str(abuse.tssh.port), abuse.user,
                              "--count", str(count), "--seconds", str(seconds))
        flood_end = time.time()
        out, err = typing.communicate(timeout=120)
    finally:
        if typing.poll() is None:
            typing.kill()
            typing.wait()
    assert typing.returncode == 0, err[-2000:]
    keys = typist.parse(out.decode())
    before = [ms for at, ms in keys if at < flood_start]
    during = [ms for at, ms in keys if flood_start <= at <= flood_end]
    outcomes = flood["outcomes"]
    assert isinstance(outcomes, dict)
    ok, login_s = abuse.login()
    refusals = [e for e in abuse.log_entries() if e.get("peer_ip") ==
                abuse.lab.nodes["intruder"].address]
    p99_before, p99_during = percentile(before, 99), percentile(during, 99)
    passed = (outcomes.get("logged in", 0) == 0 and outcomes.get("timeout", 0) == 0
              and abuse.alive() and ok and p99_during < 1000)
    record(Outcome(
        section=SECTION,
        scenario=f"{count} SSH login attempts in {seconds:g} s from a node with no rights, "
                 "while an authorized session types (20 keys/s)",
        expected="every attempt refused; the daemon up and the typing session's echo p99 "
                 "under 1 s; a new login works after",
        observed=f"outcomes {outcomes} in {flood['elapsed_s']} s; echo p99 "
                 f"{p99_before:.1f} ms before, {p99_during:.1f} ms during "
                 f"(p50 {percentile(during, 50):.1f}); {len(refusals)} log lines for the "
                 f"node; login after: {'ok' if ok else 'FAILED'} in {login_s:.2f} s",
        passed=passed, rerun=f"{RERUN} -k flood",
        figures={"attempts": count, "echo_p99_before_ms": p99_before,
                 "echo_p99_during_ms": p99_during, "login_after_s": round(login_s, 3)}))
    assert outcomes.get("logged in", 0) == 0, flood
    assert outcomes.get("timeout", 0) == 0, flood
    assert sum(int(v) for v in outcomes.values()) == count
    assert len(before) >= 10 and len(during) >= 10
    assert p99_during < 1000, (p99_before, p99_during)
    assert abuse.alive() and ok
    assert refusals, "no log line for the refused node"


def test_garbage_before_and_during_the_handshake(abuse: Abuse) -> None:
    lines_before = len(abuse.log_entries())
    cases = abuse.hostile("client", "garbage", abuse.tssh.ip, str(abuse.tssh.port))
    ok, login_s = abuse.login()
    new_lines = abuse.log_entries()[lines_before:]
    client = abuse.lab.nodes["client"].address
    logged = [e for e in new_lines if e.get("peer_ip") == client
              and e.get("msg") == "connection closed before login"]
    summary = "; ".join(f"{name}: {c['ending']} after {c['after_s']} s"  # type: ignore[index]
                        for name, c in cases.items())
    still_open = [name for name, c in cases.items() if c["ending"] == "open"]  # type: ignore[index]
    passed = not still_open and abuse.alive() and ok and len(logged) >= len(cases)
    record(Outcome(
        section=SECTION, scenario=f"garbage and over-long lines before and during the SSH "
        f"handshake ({len(cases)} kinds)",
        expected="each connection answered or closed, a log line each, the daemon up, "
                 "a real login works after",
        observed=f"{summary}; {len(logged)} log lines; login after: "
                 f"{'ok' if ok else 'FAILED'} in {login_s:.2f} s",
        passed=passed, rerun=f"{RERUN} -k garbage",
        figures={"cases": len(cases), "log_lines": len(logged)}))
    assert not still_open, cases
    assert abuse.alive() and ok
    assert len(logged) >= len(cases), new_lines


def test_slowloris_on_the_daemon(abuse: Abuse) -> None:
    count = 500 if long_run() else 100
    give_up = GRACE + 12.0
    server = abuse.tssh.ip
    slow = subprocess.Popen(
        abuse.lab.exec_argv("intruder", sys.executable, "-m", "tests.lab.hostile",
                            "slowloris", server, str(abuse.tssh.port), "--count", str(count),
                            "--seconds", str(give_up)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        time.sleep(1.0)  # the slow connections are open and trickling
        logins = [abuse.login() for _ in range(3)]
        out, err = slow.communicate(timeout=give_up + 60)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert slow.returncode == 0, err[-2000:]
    result = json.loads(out)
    worked = [s for ok, s in logins if ok]
    passed = (result["gave_up"] == 0 and result["longest_s"] < GRACE + 3
              and result["peak_held"] <= PER_SOURCE and len(worked) == len(logins)
              and abuse.alive())
    record(Outcome(
        section=SECTION,
        scenario=f"slowloris on the daemon: {count} connections from one node trickling "
                 "the version line, one byte per 0.5 s",
        expected=f"at most per_source_max_startups ({PER_SOURCE}) held, each closed by "
                 f"login_grace_time ({GRACE} s); real logins from another node work meanwhile",
        observed=f"{result['held_over_1s']} held past 1 s (peak {result['peak_held']} at "
                 f"once), the longest {result['longest_s']:.1f} s, {result['gave_up']} never "
                 f"closed, {result['refused']} not connected (slowest connect "
                 f"{result['slowest_connect_s']:.1f} s: the listen backlog); real logins "
                 f"during it: {len(worked)} of {len(logins)} "
                 f"({', '.join(f'{s:.2f} s' for s in worked)})",
        passed=passed, rerun=f"{RERUN} -k slowloris",
        figures={"connections": count, "peak_held": result["peak_held"],
                 "longest_s": result["longest_s"], "logins_ok": len(worked)}))
    assert result["gave_up"] == 0, result
    assert result["longest_s"] < GRACE + 3, result
    assert result["peak_held"] <= PER_SOURCE, result
    assert abuse.alive()
    assert len(worked) == len(logins), logins
