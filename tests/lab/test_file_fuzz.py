"""Fuzzed policy and netmap files fed to a running daemon (issue 15, section 5): hypothesis
breaks the good files (bytes deleted, inserted or replaced, the file cut short, a value of the
wrong type) and writes each over the one the daemon follows, as an editor saving it would.

The daemon must not crash, must refuse a broken file with an error that names the file, line
and column (in ``tssh status`` and its log for the policy, in its log for the netmap), and
must keep the last good file in force: alice still logs in. What the daemon decides is
checked against the parser run here on the same file, so a mutation that is still a valid
file must be applied (the good file is then put back). tests/policy and tests/test_hujson.py
fuzz the parsers themselves; this drives the file followers of a real daemon process
(docs/daemon.md and docs/config.md: the policy and the netmap are re-read when they change).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import NETMAP, POLICY, DaemonFactory, TsshDaemon, run_ssh
from tests.lab.results import long_run
from tests.lab.scenario import scenario
from tests.polling import wait_for
from tssh.errors import IdentityError, PolicyError
from tssh.identity.netmap import read_netmap
from tssh.policy import load_policy

pytestmark = pytest.mark.xdist_group("lab")

SECTION = "Load and abuse"
EXAMPLES = 100 if long_run() else 12
SETTLE = 10.0  # seconds the daemon has to act on a file (it polls every second)
GOOD_NETMAP = json.dumps(NETMAP, indent=2)

_PIECES = st.sampled_from([*'{}[],:"\\/\n *', "//", "/*", "*/", "true", "null", "1e999",
                           '"\\ud800"', "\u00e9", "\x00", "\ufeff", '"', "0x10", "-"])
# Wrong values where the schema expects others: found by the validator, not the JSON reader.
_SWAPS = [('"accept"', '"allow"'), ('"users": [', '"users": "root", "x": ['),
          ('"src": [', '"src": 5, "y": ['), ('"tag:prod"', '"prod"'), ('"ssh"', '"shh"'),
          ('"name": "server"', '"name": ""'), ('"addresses": [', '"addresses": ["300.1.1.1", '),
          ('"self": "server"', '"self": "nowhere"'), ('"nodes"', '"nodez"')]


@st.composite
def broken(draw: st.DrawFn, text: str) -> str:
    """``text`` with one to three edits."""
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "replace", "cut", "swap"]))
        if op == "cut":
            text = text[:at]
        elif op == "swap":
            old, new = draw(st.sampled_from([s for s in _SWAPS if s[0] in text] or _SWAPS))
            text = text.replace(old, new, 1)
        else:
            end = draw(st.integers(at, min(len(text), at + 12))) if op != "insert" else at
            text = text[:at] + (draw(_PIECES) if op != "delete" else "") + text[end:]
    return text


def _write(path: Path, text: str) -> None:
    """As an editor saves: a new file renamed over the old one (never read half-written)."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text, encoding="utf-8", errors="surrogatepass")
    os.replace(tmp, path)


def _positioned(path: Path, error: str) -> bool:
    return re.match(rf"{re.escape(str(path))}:\d+:\d+: \S", error) is not None


@dataclass
class Followed:
    daemon: TsshDaemon

    def logged(self, needle: str) -> list[dict[str, object]]:
        return [e for e in self.daemon.log_entries() if needle in str(e.get("msg"))]

    def policy(self) -> dict[str, object]:
        status = self.daemon.status()["policy"]
        assert isinstance(status, dict)
        return status

    def alice_logs_in(self) -> bool:
        return run_ssh(self.daemon, "root", "echo still").stdout == b"still\n"


@pytest.fixture
def followed(tmp_path: Path) -> Iterator[Followed]:
    factory = DaemonFactory(tmp_path)
    try:
        yield Followed(factory())
    finally:
        for d in factory.started:
            d.stop()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                phases=[Phase.explicit, Phase.generate],  # each example is seconds of I/O
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])


def test_fuzzed_policy_files_keep_the_last_good_policy(followed: Followed, rerun: str) -> None:
    daemon = followed.daemon
    path = daemon.policy
    with scenario(SECTION, f"fuzzed policy files: {EXAMPLES} hypothesis edits of the policy "
                  "file a running daemon follows",
                  "the daemon stays up; each broken file refused with file:line:col in "
                  "`tssh status` and the log, the last good policy kept (alice logs in); a "
                  "still-valid edit applied", rerun) as seen:
        counts = {"refused": 0, "applied": 0}
        errors: set[str] = set()

        @FUZZ
        @given(text=broken(POLICY))
        def one(text: str) -> None:
            before = followed.policy()
            _write(path, text)
            try:
                expected: str | None = None
                rules = load_policy(path).ssh
            except PolicyError as e:
                expected = str(e)
            if expected is None:  # still valid: applied, then the good file put back
                counts["applied"] += 1
                wait_for(lambda: followed.policy()["loadedAt"] != before["loadedAt"]
                         and followed.policy()["error"] is None, SETTLE, 0.2,
                         what=f"a valid edit applied ({len(rules)} rules)")
                loaded = followed.policy()["loadedAt"]
                _write(path, POLICY)
                wait_for(lambda: followed.policy()["loadedAt"] != loaded, SETTLE, 0.2,
                         what="the good policy back")
                return
            counts["refused"] += 1
            errors.add(expected)
            wait_for(lambda: followed.policy()["error"] == expected, SETTLE, 0.2,
                     what=f"the daemon's error {expected!r}")
            now = followed.policy()
            assert (now["loadedAt"], now["rules"]) == (before["loadedAt"], before["rules"])
            assert _positioned(path, expected), expected
            assert followed.alice_logs_in(), "the last good policy is not in force"

        one()
        logged = " ".join(str(e.get("msg")) for e in followed.logged("policy not reloaded"))
        missing = [e for e in errors if e not in logged]
        seen.saw(f"{counts['refused']} broken files refused, each with file:line:col; "
                 f"{counts['applied']} still-valid edits applied; {len(errors)} distinct "
                 f"errors, {len(errors) - len(missing)} of them in the log; daemon up")
        seen.figures.update({"examples": EXAMPLES, **counts, "errors_logged": len(errors)
                             - len(missing)})
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited"
        assert not missing, missing[:3]


def test_fuzzed_netmap_files_keep_the_last_good_netmap(followed: Followed, rerun: str) -> None:
    daemon = followed.daemon
    path = daemon.netmap
    with scenario(SECTION, f"fuzzed netmap files: {EXAMPLES} hypothesis edits of the netmap "
                  "file a running daemon follows",
                  "the daemon stays up; each broken file logged once with file:line:col, the "
                  "last good netmap kept (alice logs in); a still-valid edit applied",
                  rerun) as seen:
        counts = {"refused": 0, "applied": 0}

        @FUZZ
        @given(text=broken(GOOD_NETMAP))
        def one(text: str) -> None:
            refused = len(followed.logged("identity file not reloaded"))
            updated = len(followed.logged("identity file updated"))
            _write(path, text)
            try:
                expected: str | None = None
                read_netmap(path)
            except IdentityError as e:
                expected = str(e)
            if expected is None:  # still valid: applied (if it changed anything), put back
                counts["applied"] += 1
                time.sleep(2.5)  # two polls: an edit that changes nothing logs nothing
                _write(path, GOOD_NETMAP)
                if len(followed.logged("identity file updated")) > updated:
                    wait_for(lambda: len(followed.logged("identity file updated")) > updated + 1,
                             SETTLE, 0.2, what="the good netmap back")
                return
            counts["refused"] += 1
            wait_for(lambda: len(followed.logged("identity file not reloaded")) > refused,
                     SETTLE, 0.2, what=f"the daemon's error {expected!r}")
            entry = followed.logged("identity file not reloaded")[-1]
            assert entry.get("error") == expected, (entry, expected)
            assert _positioned(path, expected), expected
            assert followed.alice_logs_in(), "the last good netmap is not in force"

        one()
        seen.saw(f"{counts['refused']} broken files refused and logged with file:line:col; "
                 f"{counts['applied']} still-valid edits applied; daemon up")
        seen.figures.update({"examples": EXAMPLES, **counts})
        assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon exited"
