"""`tssh audit tail`: the last entries across rotated files, filters, JSON, --follow."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.processes import stop_process
from tssh.audit.entry import audit_entry, to_line
from tssh.audit.sink import AuditFile
from tssh.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def write(state: Path, count: int, start: int = 0, max_bytes: int = 4096) -> None:
    f = AuditFile(state / "audit.jsonl", max_bytes=max_bytes, files=5)
    f.open()
    for i in range(start, start + count):
        conn = "ssh-conn-even" if i % 2 == 0 else "ssh-conn-odd"
        f.write([to_line(audit_entry(1_700_000_000 + i, {
            "event": "session.start", "conn": conn, "user": "alice@example.com",
            "peer": "laptop", "local_user": "alice", "n": i}))])
    f.close()


def tail(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> list[str]:
    assert main(["audit", "tail", "--state-dir", str(state), *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_the_last_entries_across_rotated_files(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 60)
    assert (tmp_path / "audit.jsonl.1").exists()  # the last ones span two files
    out = tail(capsys, tmp_path, "-n", "40", "--json")
    assert [json.loads(line)["n"] for line in out] == list(range(20, 60))
    readable = tail(capsys, tmp_path, "-n", "1")
    assert readable[0].startswith("2023-11-14T22:14:19.000Z alice@example.com (laptop) as "
                                  "alice session.start n=59")


def test_filters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 10)
    odd = tail(capsys, tmp_path, "--json", "--connection", "ssh-conn-odd")
    assert [json.loads(line)["n"] for line in odd] == [1, 3, 5, 7, 9]
    late = tail(capsys, tmp_path, "--json", "--since", "2023-11-14T22:13:28Z")
    assert [json.loads(line)["n"] for line in late] == [8, 9]


def test_no_log_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit", "tail", "--state-dir", str(tmp_path)]) == 1
    assert "no audit log" in capsys.readouterr().err


def test_follow_goes_on_across_a_rotation(tmp_path: Path) -> None:
    write(tmp_path, 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tssh", "audit", "tail", "--follow", "-n", "0", "--json",
         "--state-dir", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        # Until it shows one probe, it is still starting.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            write(tmp_path, 1, start=-1)
            with contextlib.suppress(queue.Empty):
                if json.loads(lines.get(timeout=0.3))["n"] == -1:
                    break
        write(tmp_path, 80, start=100, max_bytes=4096)  # rotates several times
        seen = []
        deadline = time.monotonic() + 30
        while len(seen) < 80 and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                n = json.loads(lines.get(timeout=0.5))["n"]
                if n != -1:  # a late probe
                    seen.append(n)
        assert seen == list(range(100, 180))  # nothing lost across the rotations
    finally:
        stop_process(proc)
