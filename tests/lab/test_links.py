"""tssh on a slow, lossy link (issue 15, section 4): the link really delays, and a login, an
interactive session and a download work over it. benchmarks/bench_links.py measures the
same link against the stock sshd (docs/performance.md, "Slow and lossy links")."""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.bench_ssh import Target, bench_user, percentile, tssh_daemon
from tests.e2e.conftest import require_tool
from tests.identity.wglab import lab_unavailable_reason
from tests.lab import typist
from tests.lab.link import LinkLab, Shape, link_lab, server_place
from tests.lab.results import Outcome, long_run, record

pytestmark = pytest.mark.xdist_group("lab")

SHAPE = Shape(rtt_ms=100, loss=0.01)
RERUN = "sudo .venv/bin/python -m pytest -n 0 tests/lab/test_links.py"
SSH_PORT = 22


@pytest.fixture(scope="module")
def shaped() -> Iterator[tuple[LinkLab, Target, str]]:
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason=f"WireGuard lab unavailable: {reason}")
    for tool in ("ssh", "ping", "useradd"):
        require_tool(tool)
    with tempfile.TemporaryDirectory(prefix="lab-links-") as tmp, bench_user() as user, \
            link_lab(shape=SHAPE) as link:
        work = Path(tmp)
        work.chmod(0o755)
        with tssh_daemon(work, user, server_place(link.lab, SSH_PORT)) as tssh:
            yield link, tssh, user


def test_the_link_delays_every_round_trip(shaped: tuple[LinkLab, Target, str]) -> None:
    link, _, _ = shaped
    rtts = link.rtt_ms(10)
    assert len(rtts) >= 7, rtts  # 1 % loss each way: a lost ping or two at most
    assert min(rtts) >= 90, rtts
    record(Outcome(
        section="Links", scenario=f"the lab link delays ({SHAPE})",
        expected="every ping's round trip >= 90 ms",
        observed=f"{len(rtts)} of 10 pings back, RTT min {min(rtts):.1f} ms, "
                 f"median {statistics.median(rtts):.1f} ms",
        passed=True, rerun=f"{RERUN} -k delays",
        figures={"rtt_min_ms": min(rtts), "rtt_median_ms": statistics.median(rtts)}))


def test_session_and_download_over_the_slow_lossy_link(
        shaped: tuple[LinkLab, Target, str]) -> None:
    link, tssh, user = shaped
    start = time.perf_counter()
    result = subprocess.run(tssh.ssh(user, "id -un; exit 3"), capture_output=True, timeout=60)
    login_s = time.perf_counter() - start
    assert result.returncode == 3, result.stderr
    assert result.stdout.decode().strip() == user
    assert login_s >= 0.2  # several round trips: the link is in the path

    size = (64 if long_run() else 8) << 20
    start = time.perf_counter()
    download = subprocess.run(tssh.ssh(user, f"head -c {size} /dev/zero"),
                              capture_output=True, timeout=120)
    seconds = time.perf_counter() - start
    assert download.returncode == 0, download.stderr
    assert len(download.stdout) == size and not download.stdout.strip(b"\0")
    mib_s = size / seconds / (1 << 20)

    echoes = [ms for _, ms in typist.run(typist.command(
        link.argv("client"), tssh.ip, tssh.port, user, seconds=2.5))]
    p50, p99 = percentile(echoes, 50), percentile(echoes, 99)
    assert len(echoes) >= 10
    assert p50 >= 90  # each echo crosses the link and back
    record(Outcome(
        section="Links", scenario=f"login, echo and a download over {SHAPE}",
        expected="ssh exits with the command's status; every byte of the download arrives; "
                 "echo takes one round trip",
        observed=f"login + command {login_s:.2f} s; {size >> 20} MiB in {seconds:.1f} s "
                 f"({mib_s:.1f} MiB/s); echo p50 {p50:.0f} ms, p99 {p99:.0f} ms "
                 f"({len(echoes)} keys)",
        passed=True, rerun=f"{RERUN} -k download",
        figures={"login_s": round(login_s, 3), "download_mib_s": round(mib_s, 2),
                 "echo_p50_ms": p50, "echo_p99_ms": p99}))
