"""The recorder's web UI in a real browser: headless Debian Chromium driven by Playwright,
against a real recorder process (``--ui``) fed over real HTTP.

The browser connects from 127.0.0.1 and the recorder knows viewers by source address, so
each test writes the recorder's netmap with 127.0.0.1 as the node of a viewer (alice) or of
a known non-viewer (carol). Every request the browser makes goes through a route handler that
lets loopback through and records (and aborts) anything else. Screenshots are saved under the
test's tmp dir.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from recorder.web import vendor_problem
from tests.e2e.recorders import RecorderLoop
from tests.recorder.conftest import (
    NETMAP,
    POLICY,
    SERVER,
    RecorderProc,
    cast_header,
    event,
)
from tests.recorder.h2upload import H2Upload

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import Browser, Page, Route, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright (the test extra) is missing"),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(vendor_problem() is not None, reason=str(vendor_problem())),
]

SESSION = (cast_header() + event(0.5, "hello from the recorded session\r\n")
           + event(3.0, "second line at three\r\n")
           + event(4.0, "tssh: a marker in the cast", "m")
           + event(6.0, "late words\r\n") + event(6.5, "0", "x"))


def _recorder(tmp: Path, browser_as: str) -> RecorderProc:
    """A ``--ui`` recorder whose netmap puts 127.0.0.1 (the browser) on ``browser_as``'s
    node: "laptop" (alice, a viewer) or "carolpc" (carol, known, not a viewer)."""
    netmap: dict[str, Any] = json.loads(json.dumps(NETMAP))
    for node in netmap["nodes"]:
        if node["name"] == "recorder":
            node["addresses"] = ["127.0.0.30"]
        if node["name"] == browser_as:
            node["addresses"] = [*node["addresses"], "127.0.0.1"]
    (tmp / "netmap.hujson").write_text(json.dumps(netmap))
    (tmp / "policy.hujson").write_text(POLICY)
    rec = RecorderProc(tmp, str(tmp / "store"), extra=["--ui"])
    rec.start()
    return rec


@pytest.fixture
def viewer_recorder(tmp_path: Path) -> Iterator[RecorderProc]:
    rec = _recorder(tmp_path, "laptop")
    try:
        yield rec
    finally:
        rec.stop()


class Browsing:
    """One Chromium; pages whose requests must all stay on loopback."""

    def __init__(self, browser: Browser, shots: Path) -> None:
        self.browser = browser
        self.shots = shots
        self.outside: list[str] = []
        self.errors: list[str] = []  # script errors and console errors (a CSP refusal...)
        self.expect_refusals = False  # the 403 test: the browser logs each refused load

    def page(self) -> Page:
        context = self.browser.new_context(viewport={"width": 1000, "height": 800})

        def guard(route: Route) -> None:
            host = urlsplit(route.request.url).hostname
            if route.request.url.startswith("data:") or host == "127.0.0.1":
                route.continue_()
            else:
                self.outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        page = context.new_page()
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(f"console: {m.text}")
                if m.type == "error" and not self.expect_refusals else None)
        return page

    def shot(self, page: Page, name: str) -> None:
        page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)


@pytest.fixture
def browsing(tmp_path: Path) -> Iterator[Browsing]:
    assert sync_playwright is not None
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=CHROMIUM_ARGS)
        b = Browsing(browser, shots)
        try:
            yield b
        finally:
            browser.close()
        assert b.outside == [], f"requests left loopback: {b.outside}"
        assert b.errors == [], f"script errors in the page: {b.errors}"


def _upload(rec: RecorderProc, body: bytes) -> str:
    with rec.client(SERVER) as c:
        assert c.post("/record", content=iter([body])).status_code == 200
        r = c.get("/healthz")
        assert r.status_code == 200
    return _newest(rec)


def _newest(rec: RecorderProc) -> str:
    with rec.client("127.0.0.2") as c:  # alice's laptop, whatever the browser is
        return str(c.get("/api/v1/recordings").json()["recordings"][0]["id"])


def _terminal(page: Page) -> str:
    return page.inner_text("pre.ap-term-text")


def _wait(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_list_shows_an_uploaded_recording_and_the_player_plays_it(
        viewer_recorder: RecorderProc, browsing: Browsing) -> None:
    rid = _upload(viewer_recorder, SESSION)
    page = browsing.page()
    response = page.goto(viewer_recorder.url + "/")
    assert response is not None and response.status == 200
    row = page.locator(f'tr.rec[data-id="{rid}"]')
    assert "alice@example.com" in row.inner_text()
    assert "server" in row.locator("td.node").inner_text()
    assert row.locator(".status").inner_text() == "complete"
    browsing.shot(page, "list")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    browsing.shot(page, "list-phone")
    page.set_viewport_size({"width": 1000, "height": 800})

    row.locator("td.start a").click()
    page.wait_for_url(f"**/play/{rid}")
    page.wait_for_selector("pre.ap-term-text")
    markers = page.locator("#markers").inner_text()
    assert "tssh: a marker in the cast" in markers and "exit status 0" in markers
    page.select_option("#speed", "8")
    # polled from here: the page's CSP forbids eval, which wait_for_function
    # uses for a string predicate once its first try fails
    _wait(lambda: page.evaluate("window.tsshPlayer.player !== null"), "the player")
    page.evaluate("window.tsshPlayer.player.play()")
    _wait(lambda: "late words" in _terminal(page), "the whole recording to play")
    text = _terminal(page)
    assert "hello from the recorded session" in text and "second line at three" in text
    browsing.shot(page, "player-played")


def test_player_starts_at_t(viewer_recorder: RecorderProc, browsing: Browsing) -> None:
    rid = _upload(viewer_recorder, SESSION)
    page = browsing.page()
    page.goto(f"{viewer_recorder.url}/play/{rid}?t=3.5")
    _wait(lambda: "second line at three" in _terminal(page), "the screen at 3.5 s")
    assert "late words" not in _terminal(page)  # written at 6 s
    assert "search hit" in page.locator("#markers").inner_text()
    browsing.shot(page, "player-at-t")
    # a marker button seeks there
    page.locator("#markers button", has_text="exit status 0").click()
    _wait(lambda: "late words" in _terminal(page), "the screen after seeking to the exit")


def test_live_recording_appears_and_plays_as_it_happens(
        viewer_recorder: RecorderProc, browsing: Browsing) -> None:
    loop = RecorderLoop()
    try:
        listing = browsing.page()
        listing.goto(viewer_recorder.url + "/")
        assert listing.locator("tr.empty").count() == 1

        up = loop.run(H2Upload.open("127.0.0.1", viewer_recorder.port, local_address=SERVER))
        first = cast_header() + event(0.1, "first output\r\n")
        assert loop.run(up.wait_headers()) == 200
        loop.run(up.send(first))
        loop.run(up.wait_ack(len(first)))
        rid = _newest(viewer_recorder)
        # the list follows without a reload
        live_row = listing.locator(f'tr.rec[data-id="{rid}"] .status.live')
        live_row.wait_for(timeout=10_000)
        browsing.shot(listing, "list-live")

        page = browsing.page()
        page.goto(f"{viewer_recorder.url}/play/{rid}")
        _wait(lambda: "first output" in _terminal(page), "the live backlog")
        assert "Live" in page.locator("#live-note").inner_text()
        loop.run(up.send(event(1.0, "written after the page opened\r\n")))
        _wait(lambda: "written after the page opened" in _terminal(page), "new live output")
        browsing.shot(page, "player-live")
        loop.run(up.send(event(1.5, "7", "x")))
        loop.run(up.end())
        loop.run(up.wait_end())
        _wait(lambda: "exit status 7" in page.locator("#live-note").inner_text(),
              "the session's end and exit status")
        assert "complete" in page.locator("#status").inner_text()
        assert page.locator("#exit-status").inner_text() == "7"
        assert page.locator("#duration").inner_text() == "1.5s"
        # then the whole recording, paused at its end, seekable
        _wait(lambda: page.evaluate("window.tsshPlayer.mode === 'recording'"),
              "the player to switch from live to the whole recording")
        _wait(lambda: "written after the page opened" in _terminal(page), "the final screen")
        assert "exit status 7" in page.locator("#markers").inner_text()
        browsing.shot(page, "player-live-ended")
        # the list row turns complete without a reload
        listing.locator(f'tr.rec[data-id="{rid}"] .status.complete').wait_for(timeout=10_000)
        loop.run(up.close())
    finally:
        loop.close()


def test_non_viewer_gets_403(tmp_path: Path, browsing: Browsing) -> None:
    rec = _recorder(tmp_path, "carolpc")
    browsing.expect_refusals = True
    try:
        rid = _upload(rec, SESSION)
        page = browsing.page()
        for path in ("/", f"/play/{rid}", "/ui/vendor/asciinema-player.min.js", "/ui/app.css"):
            response = page.goto(rec.url + path)
            assert response is not None and response.status == 403, path
            assert "hello" not in page.content()
        browsing.shot(page, "non-viewer")
    finally:
        rec.stop()


def test_grouping_of_non_interactive_sessions(viewer_recorder: RecorderProc,
                                              browsing: Browsing) -> None:
    conn = "ssh-conn-20261125T090000-aaaaaaaaaa"
    for i in range(3):
        _upload(viewer_recorder, cast_header(conn=conn, width=0, height=0, command=f"task-{i}",
                                             tssh={"stderr": True, "input": False})
                + event(0.1, f"ansible {i}\n") + event(0.2, "0", "x"))
    interactive = _upload(viewer_recorder, SESSION)
    page = browsing.page()
    page.goto(viewer_recorder.url + "/")
    assert page.locator("tr.rec").count() == 1
    group = page.locator("tr.group")
    assert group.count() == 1 and "3 non-interactive sessions" in group.inner_text()
    group.locator("summary").click()
    assert "task-2" in group.inner_text()
    browsing.shot(page, "list-grouped")
    page.select_option("select[name=automation]", "hide")
    page.click("form.filters button")
    page.wait_for_url("**automation=hide**")
    assert page.locator("tr.group").count() == 0
    assert "3 non-interactive sessions hidden" in page.locator("tr.hidden-note").inner_text()
    page.select_option("select[name=automation]", "show")
    page.click("form.filters button")
    page.wait_for_url("**automation=show**")
    assert page.locator("tr.rec").count() == 4
    assert page.locator(f'tr.rec[data-id="{interactive}"]').count() == 1


def test_paging_and_filters(viewer_recorder: RecorderProc, browsing: Browsing) -> None:
    for i in range(3):
        _upload(viewer_recorder, cast_header(conn=f"ssh-conn-{i}", command=f"cmd-{i}",
                                             sshUser="bob" if i == 1 else "alice")
                + event(0.1, "x\n"))
    page = browsing.page()
    page.goto(viewer_recorder.url + "/?limit=2")
    assert page.locator("tr.rec td.cmd").all_inner_texts() == ["cmd-2", "cmd-1"]
    page.click("a.older")  # the API's cursor
    assert page.locator("tr.rec td.cmd").all_inner_texts() == ["cmd-0"]
    assert page.locator("a.older").count() == 0
    page.click("text=« Newest")
    assert page.locator("tr.rec").count() == 2
    page.goto(viewer_recorder.url + "/")
    page.fill("input[name=user]", "bob")
    page.click("form.filters button")
    page.wait_for_url("**user=bob**")
    assert [t.strip() for t in page.locator("tr.rec td.cmd").all_inner_texts()] == ["cmd-1"]


def test_search_box_finds_a_word_and_its_hit_opens_the_player_there(
        viewer_recorder: RecorderProc, browsing: Browsing) -> None:
    """Issue 12's auditor: type a word seen in a session, read the matching line in the
    result, click it, and the player opens at that moment showing the text."""
    session = (cast_header() + event(0.5, "an ordinary first line\r\n")
               + event(3.0, "$ rm -rf /tmp/sc") + event(3.1, "ratch\r\n")  # a word split
               + event(6.0, "later output\r\n") + event(6.5, "0", "x"))
    rid = _upload(viewer_recorder, session)
    _upload(viewer_recorder, SESSION)  # another recording, without the word
    page = browsing.page()
    page.goto(viewer_recorder.url + "/")
    page.fill("input[name=q]", "scratch")
    page.press("input[name=q]", "Enter")
    page.wait_for_url("**q=scratch**")
    assert page.locator("tr.rec").count() == 1
    hit = page.locator(f'tr.rec[data-id="{rid}"] ul.matches a.match')
    assert hit.count() == 1
    assert "rm -rf /tmp/scratch" in hit.inner_text()
    browsing.shot(page, "search-results")
    hit.click()
    page.wait_for_url(f"**/play/{rid}?**")
    _wait(lambda: "rm -rf /tmp/scratch" in _terminal(page),
          f"the screen at the hit ({page.url}): {_terminal(page)!r}")
    assert "later output" not in _terminal(page)  # written after the hit
    assert "search: " in page.locator("#markers").inner_text()
    at = page.evaluate("window.tsshPlayer.player.getCurrentTime()")
    assert 2.9 <= float(at) <= 3.2
    browsing.shot(page, "search-hit-player")


def test_player_opens_far_into_a_long_recording_from_a_segment(
        viewer_recorder: RecorderProc, browsing: Browsing) -> None:
    """``?t=`` in a recording of more than 8 MiB: the page fetches a segment of the cast from
    the seek index (docs/recorder.md, "Seeking in long recordings"), not the whole file, and
    the screen at that time is the one the whole recording shows there."""
    pad = "." * 55  # a row fits the 80 columns
    body = cast_header() + b"".join(
        event(i / 200, f"row {i:06d} {pad}\r\n") for i in range(120_000))  # ~11 MiB, 600 s
    assert len(body) > 9 * 1024 * 1024
    rid = _upload(viewer_recorder, body)
    page = browsing.page()
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/cast" in r.url else None)
    page.goto(f"{viewer_recorder.url}/play/{rid}?t=500")
    _wait(lambda: "row 100000" in _terminal(page), "the screen at 500 s")
    text = _terminal(page)
    assert "row 099990" in text and "row 100001" not in text  # the rows up to 500 s
    assert [urlsplit(u).query for u in fetched] == ["from=500"]
    browsing.shot(page, "player-segment")
    # the player plays on from there
    page.evaluate("window.tsshPlayer.player.play()")
    _wait(lambda: "row 10002" in _terminal(page), "playing on from the segment")
