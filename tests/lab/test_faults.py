"""Faults on the lab's mesh, each with what the operator sees: the client's message and exit
status, the daemon's audit line, the recorder's log line, the API's status of the recording.

server1 records to recdisk first, then recs3; server2 the other way round. Every test leaves
the lab as it found it: the ``lab`` fixture restarts what a test stopped, frees the disk and
puts the inventories back (tests/lab/conftest.py).
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.lab.results import long_run
from tests.lab.scenario import Observation, scenario
from tests.lab.testbed import ALICE, Testbed, faketime_library, launch
from tests.polling import wait_for
from tssh.server.recording import FAILED_MESSAGE, REFUSED_EXIT_STATUS, REFUSED_MESSAGE

pytestmark = pytest.mark.xdist_group("lab")

SECTION = "Faults"
S3_OUTAGE_S = 60 if long_run() else 3


def marker() -> str:
    return f"fault-{uuid.uuid4().hex[:12]}"


def ticker(mark: str, lines: int, interval: float = 0.01) -> str:
    """A remote command printing ``mark N`` for N = 1..lines, one line per ``interval``."""
    return f"for i in $(seq 1 {lines}); do echo {mark} $i; sleep {interval}; done"


def numbers(text: str, mark: str) -> list[int]:
    """The N of each whole ``mark N`` line of ``text``."""
    found = []
    for line in text.splitlines():
        word, _, n = line.partition(" ")
        if word == mark and n.isdigit():
            found.append(int(n))
    return found


def plain(lab: Testbed, text: str) -> str:
    """``text`` without the lab's temporary directory (the report is published)."""
    return text.replace(str(lab.workdir), "<lab>")


def read_lines(proc: subprocess.Popen[bytes], count: int) -> bytes:
    """The first ``count`` lines the session printed (the client has them)."""
    assert proc.stdout is not None
    return b"".join(proc.stdout.readline() for _ in range(count))


def audit(lab: Testbed, server: str, mark: str, event: str,
          timeout: float = 20) -> dict[str, Any]:
    """The daemon's audit line ``event`` for the session whose command holds ``mark``."""
    start = lab.wait_log(server, lambda e: e.get("event") == "session.start"
                         and mark in (e.get("command") or ""), timeout, "session.start")
    return lab.wait_log(server, lambda e: e.get("event") == event
                        and e.get("session") == start["session"], timeout, event)


def audit_after(lab: Testbed, server: str, seen_before: int, event: str,
                timeout: float = 20) -> dict[str, Any]:
    """The first audit line ``event`` among the daemon's log lines after the first
    ``seen_before`` (for a session refused before it started: no ``session.start``)."""
    found = wait_for(lambda: [e for e in lab.log_entries(server)[seen_before:]
                              if e.get("event") == event], timeout=timeout, interval=0.1,
                     what=f"{event} in {server}'s log")
    return found[0]


def recorder_line(lab: Testbed, recorder: str, recording_id: str, word: str) -> str:
    """The recorder's log line about ``recording_id`` that holds ``word``."""
    lines = [line for line in lab.log_text(recorder).splitlines()
             if recording_id in line and word in line]
    assert lines, (recording_id, word, lab.log_text(recorder)[-2000:])
    return lines[-1].split(" ", 2)[-1]  # without the date and time


def acked_bytes_readable(lab: Testbed, seen: Observation, recorder: str,
                         entry: dict[str, Any], acked: int) -> None:
    """Every byte the recorder acked is in the recording it serves, and it verifies."""
    status, cast = lab.lab.http_get(
        "client", f"{lab.recorder_url(recorder)}/api/v1/recordings/{entry['id']}/cast")
    assert status == 200 and len(cast) == entry["size"] >= acked, (status, len(cast), acked)
    check = lab.verify(recorder, entry["id"])
    assert check["ok"] is True, check
    seen.figures["bytes acked"] = acked
    seen.figures["bytes readable"] = len(cast)
    seen.saw(f"API: {entry['status']} ({entry['error']}), {len(cast)} bytes readable >= "
             f"{acked} acked, /verify ok")


def test_recorder_killed_mid_session_enforced_fails_over(lab: Testbed, rerun: str) -> None:
    mark, lines = marker(), 300
    with scenario(SECTION, "recorder killed (SIGKILL) mid-session, enforced, the second up",
                  "the session goes on (exit 0, every line): a new recording of the same "
                  "connection on the second recorder, opened by a marker naming the first; "
                  "the restarted first recorder finishes its part incomplete, every acked "
                  "byte readable", rerun) as seen:
        with lab.live_ssh("server1", lab.enforced, ticker(mark, lines)) as proc:
            first = read_lines(proc, 30)
            lab.stop("recdisk", kill=True)
            out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert numbers((first + out).decode(), mark) == list(range(1, lines + 1))
        seen.saw(f"client: all {lines} lines, exit 0")
        ended = audit(lab, "server1", mark, "recording.end")
        attempts = ended["recording"]["attempts"]
        assert [a["recorder"] for a in attempts][-1] == f"{lab.address('recs3')}:80", attempts
        seen.saw(f"daemon: recording.end on {ended['recording']['destination']} after "
                 f"{len(attempts)} attempts")
        lab.start("recdisk")
        part1 = lab.find_recording("recdisk", mark, statuses=("incomplete",), user=ALICE,
                                   node="server1")
        connection = part1["header"]["connectionID"]
        found = wait_for(lambda: [r for r in lab.recordings("recs3", connection=connection)
                                  if r["status"] == "complete"], timeout=20, interval=0.2,
                         what="the failover recording on recs3")
        part2 = found[0]
        assert lab.verify("recs3", part2["id"])["ok"] is True
        note = [e[2] for e in lab.cast("recs3", part2["id"])[1] if e[1] == "m"]
        assert note and lab.address("recdisk") in note[0], note
        before = numbers(lab.output("recdisk", part1["id"]), mark)
        after = numbers(lab.output("recs3", part2["id"]), mark)
        assert before == list(range(1, len(before) + 1)) and before, before
        assert after and after[-1] == lines and after == list(range(after[0], lines + 1))
        missing = max(0, after[0] - before[-1] - 1)
        seen.figures["lines on recdisk"] = len(before)
        seen.figures["lines on recs3"] = len(after)
        seen.figures["lines in neither"] = missing
        assert missing <= 10, (before[-5:], after[:5])  # at most what was unacked in flight
        seen.saw(f"API: {part1['status']} on recdisk ({len(before)} lines), complete on "
                 f"recs3 ({len(after)} lines) with connection={connection}; recs3's marker: "
                 f"{plain(lab, note[0])!r}")


def test_recorder_killed_mid_session_enforced(lab: Testbed, rerun: str) -> None:
    mark = marker()
    with scenario(SECTION, "recorder killed (SIGKILL) mid-session, enforced, no other up",
                  "session ended at once with the enforceRecorder message, exit 254; the "
                  "restarted recorder finishes the recording incomplete, every acked byte "
                  "readable, sealed", rerun) as seen:
        lab.stop("recs3")  # nothing to fail over to
        with lab.live_ssh("server1", lab.enforced, ticker(mark, 5000)) as proc:
            read_lines(proc, 30)
            killed = time.monotonic()
            lab.stop("recdisk", kill=True)
            status = proc.wait(30)
            seen.figures["session ended after s"] = round(time.monotonic() - killed, 2)
            out, err = proc.communicate(timeout=10)
        assert status == REFUSED_EXIT_STATUS, err
        assert FAILED_MESSAGE in err.decode(), err
        seen.saw(f"client: exit {status}, {err.decode().strip()!r}")
        failed = audit(lab, "server1", mark, "recording.failed")
        seen.saw(f"daemon: {failed['msg']}: {failed['reason']}")
        acked = audit(lab, "server1", mark, "recording.end")["recording"]["bytesAcked"]
        lab.start("recdisk")
        entry = lab.find_recording("recdisk", mark, statuses=("incomplete",), user=ALICE,
                                   node="server1")
        seen.saw("recorder: " + recorder_line(lab, "recdisk", entry["id"], "incomplete"))
        acked_bytes_readable(lab, seen, "recdisk", entry, acked)
        recorded = numbers(lab.output("recdisk", entry["id"]), mark)
        client = 30 + len(numbers(out.decode(), mark))
        assert recorded == list(range(1, len(recorded) + 1)) and recorded, recorded
        # Output reaches the client once it is in the recording's pipeline, not once acked
        # (docs/recording.md): what was sent and not yet acked when the recorder died is
        # on the client's screen and not in the recording.
        seen.figures["lines the client saw"] = client
        seen.figures["lines recorded"] = len(recorded)
        seen.saw(f"{client} lines on the client, {len(recorded)} recorded (the rest was "
                 f"sent, not acked, when the recorder died)")


def test_recorder_killed_mid_session_unenforced(lab: Testbed, rerun: str) -> None:
    mark = marker()
    with scenario(SECTION, "recorder killed (SIGKILL) mid-session, not enforced, no other up",
                  "session goes on to its end, exit 0; the failure logged; the recording "
                  "kept incomplete with every acked byte", rerun) as seen:
        lab.stop("recs3")  # else it fails over, as the enforced one does
        with lab.live_ssh("server1", lab.unenforced, ticker(mark, 200)) as proc:
            first = read_lines(proc, 30)
            lab.stop("recdisk", kill=True)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert numbers((first + out).decode(), mark) == list(range(1, 201))
        seen.saw(f"client: all 200 lines, exit 0, stderr {err.decode().strip()!r}")
        failed = audit(lab, "server1", mark, "recording.failed")
        assert failed["enforced"] is False
        seen.saw(f"daemon: {failed['msg']}: {failed['reason']}")
        acked = audit(lab, "server1", mark, "recording.end")["recording"]["bytesAcked"]
        lab.start("recdisk")
        entry = lab.find_recording("recdisk", mark, statuses=("incomplete",), user=ALICE,
                                   node="server1")
        acked_bytes_readable(lab, seen, "recdisk", entry, acked)
        seen.figures["lines recorded"] = len(numbers(lab.output("recdisk", entry["id"]), mark))


def test_first_recorder_down_at_start(lab: Testbed, rerun: str) -> None:
    mark = marker()
    with scenario(SECTION, "first recorder (recdisk) down when an enforced session starts",
                  "the second recorder (recs3) takes the recording; the attempt on the "
                  "first is logged with its error", rerun) as seen:
        lab.stop("recdisk")
        started = time.monotonic()
        result = lab.ssh("server1", lab.enforced, f"echo {mark}")
        seen.figures["session took s"] = round(time.monotonic() - started, 2)
        assert result.returncode == 0 and result.stdout.decode() == f"{mark}\n", result
        begun = audit(lab, "server1", mark, "recording.start")
        attempts = begun["attempts"]
        assert [a["recorder"] for a in attempts] == [
            f"{lab.address(r)}:80" for r in ("recdisk", "recs3")], attempts
        assert attempts[0]["error"] and attempts[1]["error"] is None, attempts
        assert begun["destination"] == f"{lab.address('recs3')}:80"
        seen.saw(f"client: exit 0; daemon: recording.start on {begun['destination']}, "
                 f"first attempt: {attempts[0]['error']}")
        entry = lab.find_recording("recs3", mark, user=ALICE, node="server1")
        assert lab.verify("recs3", entry["id"])["ok"] is True
        seen.saw(f"API: {entry['status']} on recs3, /verify ok")


def test_recorder_disk_full(lab: Testbed, rerun: str) -> None:
    live, refused, after = marker(), marker(), marker()
    with scenario(SECTION, "recorder disk full (recdisk's file system, ENOSPC)",
                  "with the second recorder down, a live enforced session ended with the "
                  "enforceRecorder message, its recording incomplete and not passing "
                  "/verify; new sessions are refused with a clear message, or go to the "
                  "second recorder, or are refused with a clear message when it is down "
                  "too; unenforced ones go on; all back once space is freed", rerun) as seen:
        lab.stop("recs3")  # else the live session fails over to it and goes on
        with lab.live_ssh("server1", lab.enforced, ticker(live, 5000)) as proc:
            read_lines(proc, 30)
            filled = time.monotonic()
            seen.figures["filler bytes"] = lab.fill_disk()
            status = proc.wait(30)
            seen.figures["live session ended after s"] = round(time.monotonic() - filled, 2)
            _, err = proc.communicate(timeout=10)
        assert status == REFUSED_EXIT_STATUS and FAILED_MESSAGE in err.decode(), err
        seen.saw(f"live session: exit {status}, {err.decode().strip()!r}")
        seen.saw(plain(lab, "daemon: "
                       f"{audit(lab, 'server1', live, 'recording.failed')['reason']}"))
        entry = lab.find_recording("recdisk", live, statuses=("incomplete", "complete"),
                                   user=ALICE, node="server1")
        assert entry["status"] == "incomplete", entry
        check = lab.verify("recdisk", entry["id"])
        assert check["ok"] is False, check  # half-written: never passes as complete
        seen.saw(plain(lab, f"API: {entry['status']} ({entry['error']}); /verify ok=false "
                       f"{check['problems']}"))
        seen.saw(plain(lab, "recorder: " + recorder_line(lab, "recdisk", entry["id"],
                                                         "metadata")))

        logged = len(lab.log_entries("server1"))
        started = time.monotonic()
        result = lab.ssh("server1", lab.enforced, f"echo {refused}")
        seen.figures["refusal took s"] = round(time.monotonic() - started, 2)
        assert result.returncode == REFUSED_EXIT_STATUS and not result.stdout, result
        assert REFUSED_MESSAGE in result.stderr.decode(), result.stderr
        attempts = audit_after(lab, "server1", logged, "recording.refused")["attempts"]
        assert "storage full" in attempts[0]["error"], attempts
        seen.saw(plain(lab, f"and recs3 down: exit {result.returncode}, "
                       f"{result.stderr.decode().strip()!r}; daemon: {attempts[0]['error']}"))
        unenforced = lab.ssh("server1", lab.unenforced, f"echo {refused}-unenforced")
        assert unenforced.returncode == 0, unenforced
        assert not [r for r in lab.recordings("recdisk") if refused in r["header"]["command"]]
        seen.saw("unenforced session goes on unrecorded; no recording left for the refused "
                 "one")

        lab.start("recs3")
        failover = lab.ssh("server1", lab.enforced, f"echo {after}-failover")
        assert failover.returncode == 0, failover
        lab.find_recording("recs3", f"{after}-failover", user=ALICE, node="server1")
        seen.saw("recs3 back, the disk still full: a new enforced session is recorded on recs3")

        lab.free_disk()
        again = lab.ssh("server1", lab.enforced, f"echo {after}")
        assert again.returncode == 0, again
        lab.find_recording("recdisk", after, user=ALICE, node="server1")
        seen.saw("disk freed: the next enforced session is recorded on recdisk at once")


def test_node_removed_from_inventory(lab: Testbed, rerun: str) -> None:
    mark = marker()
    with scenario(SECTION, "client node removed from server1's inventory",
                  "its live connection ended, the recording complete; a new connection "
                  "refused as not a node of this tailnet", rerun) as seen:
        with lab.live_ssh("server1", lab.enforced, f"echo {mark}; sleep 60") as proc:
            read_lines(proc, 1)
            removed = time.monotonic()
            lab.write_inventory("server1", without=("client",))
            proc.wait(30)
            seen.figures["live connection ended after s"] = round(
                time.monotonic() - removed, 2)
            _, err = proc.communicate(timeout=10)
        assert proc.returncode != 0
        seen.saw(f"live session: exit {proc.returncode}, {err.decode().strip()!r}")
        entry = lab.find_recording("recdisk", mark, user=ALICE, node="server1")
        assert lab.verify("recdisk", entry["id"])["ok"] is True
        seen.saw(f"API: recording {entry['status']}, /verify ok")
        result = lab.ssh("server1", lab.enforced, "true")
        assert result.returncode == 255 and "not a node of this tailnet" in (
            result.stderr.decode()), result
        seen.saw(f"new connection: {result.stderr.decode().strip()!r}")


def restart_daemon(lab: Testbed, server: str) -> dict[str, Any]:
    """Stop ``server``'s daemon cleanly and start it again; its status once it answers (it
    may not listen: SSH may be off)."""
    lab.stop(server)
    launch(lab, lab.services[server])
    return lab.wait_control(server)


def test_daemon_restart_keeps_the_ssh_switch(lab: Testbed, rerun: str) -> None:
    with scenario(SECTION, "daemon restarted after `tssh set --ssh=false`",
                  "SSH stays off across the restart (nothing listens, the client's "
                  "connection refused) until `tssh set --ssh`", rerun) as seen:
        result = lab.tssh("server2", "set", "--ssh=false")
        assert result.returncode == 0, result.stderr
        started = time.monotonic()
        status = restart_daemon(lab, "server2")
        seen.figures["restart s"] = round(time.monotonic() - started, 2)
        assert status["ssh"] is False and status["listening"] == [], status
        refused = lab.ssh("server2", lab.enforced, "true")
        assert refused.returncode == 255 and "Connection refused" in (
            refused.stderr.decode()), refused
        seen.saw(f"after restart: status ssh=false, listening=[]; client: "
                 f"{refused.stderr.decode().strip()!r}")
        assert lab.tssh("server2", "set", "--ssh").returncode == 0
        mark = marker()
        back = wait_for(lambda: (r := lab.ssh("server2", lab.enforced, f"echo {mark}"))
                        .returncode == 0 and r, timeout=20, interval=0.2, what="SSH back")
        assert back and back.stdout.decode() == f"{mark}\n"
        assert lab.wait_control("server2")["ssh"] is True
        seen.saw("`tssh set --ssh` (no restart): sessions again")


def test_s3_stopped_mid_recording(lab: Testbed, rerun: str) -> None:
    mark = marker()
    ticks = int((S3_OUTAGE_S + 2) / 0.05)
    # 12 MB of output first: its first 8 MiB part is uploaded while S3 is down
    script = (f"echo {mark} 0; sleep 0.3; head -c 9000000 /dev/urandom | base64 -w 76; "
              + ticker(mark, ticks, 0.05))
    with scenario(SECTION, f"S3 stopped for {S3_OUTAGE_S} s mid-recording (recs3)",
                  "the enforced session goes on and ends normally (acks come from the "
                  "recorder's spool); the upload waits and retries, and the recording "
                  "reaches the bucket whole once S3 is back, equal to what the client saw",
                  rerun) as seen:
        screen = lab.workdir / f"{mark}.out"
        with screen.open("wb") as out:
            proc = subprocess.Popen(lab.ssh_argv("server2", lab.enforced, script),
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.PIPE)
        try:
            wait_for(lambda: screen.stat().st_size > 0, timeout=20, interval=0.05,
                     what="the session's first line")
            logged = len(lab.log_text("recs3"))
            lab.stop("s3", kill=True)
            stopped = time.monotonic()
            paused = wait_for(
                lambda: [line for line in lab.log_text("recs3")[logged:].splitlines()
                         if "will retry" in line],
                timeout=30, interval=0.2, what="an S3 upload's retry in the recorder's log")
            seen.saw(f"recorder: {paused[-1].split(' ', 2)[-1][:160]}")
            time.sleep(max(0.0, S3_OUTAGE_S - (time.monotonic() - stopped)))
            lab.start("s3")  # a fresh, empty S3: the uploader starts its upload again
            back = time.monotonic()
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        saw = screen.read_bytes().decode()
        assert numbers(saw, mark) == list(range(ticks + 1))
        seen.saw(f"client: {len(saw)} bytes, exit 0")
        entry = lab.find_recording("recs3", mark, user=ALICE, node="server2")
        assert lab.output("recs3", entry["id"]) == saw
        assert lab.verify("recs3", entry["id"])["ok"] is True
        stored = wait_for(lambda: lab.s3_object(f"{entry['storageKey']}.cast"), timeout=60,
                          interval=0.5, what="the cast in the bucket")
        seen.figures["in bucket after S3 back s"] = round(time.monotonic() - back, 2)
        status, served = lab.lab.http_get(
            "client", f"{lab.recorder_url('recs3')}/api/v1/recordings/{entry['id']}/cast")
        assert status == 200 and stored == served and len(stored) == entry["size"]
        seen.saw(f"API: complete, verifies, output equals the client's; S3 back: the "
                 f"bucket's object ({len(stored)} bytes, multipart) equals the API's cast")

def seconds(rfc3339: str) -> float:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


@pytest.mark.skipif(faketime_library() is None,
                    reason="libfaketime is not installed (Debian package libfaketime)")
def test_recorder_clock_steps_mid_recording(lab: Testbed, rerun: str) -> None:
    steps = (-7200, 7200) if long_run() else (-7200,)
    with scenario(SECTION, "recorder's wall clock stepped mid-recording by "
                  f"{', '.join(f'{s:+d}' for s in steps)} s (libfaketime)",
                  "sessions go on and end normally; each recording complete, verifying, "
                  "its end after its start by the time that passed", rerun) as seen, \
            lab.stepped_clock("recdisk") as step:
        for offset in steps:
            mark = marker()
            step(0)
            with lab.live_ssh("server1", lab.enforced, ticker(mark, 30, 0.05)) as proc:
                first = read_lines(proc, 10)
                step(offset)
                out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            saw = (first + out).decode()
            entry = lab.find_recording("recdisk", mark, user=ALICE, node="server1")
            assert lab.output("recdisk", entry["id"]) == saw
            assert lab.verify("recdisk", entry["id"])["ok"] is True
            span = seconds(entry["end"]) - seconds(entry["start"])
            assert 0 <= span <= entry["duration"] + 2, (entry["start"], entry["end"])
            seen.figures[f"end - start s, step {offset:+d}"] = round(span, 2)
            after = marker()
            assert lab.ssh("server1", lab.enforced, f"echo {after}").returncode == 0
            later = lab.find_recording("recdisk", after, user=ALICE, node="server1")
            shift = seconds(later["start"]) - time.time()
            seen.saw(f"step {offset:+d} s: session exit 0, recording complete, /verify "
                     f"ok, end - start {span:.2f} s (duration {entry['duration']:.2f} s); "
                     f"the next recording starts at the stepped clock ({shift:+.0f} s)")
