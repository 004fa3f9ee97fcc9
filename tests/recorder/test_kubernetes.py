"""Recordings from Tailscale's Kubernetes operator (docs/recorder.md, "Kubernetes
recordings"): its cast header's ``kubernetes`` object, its ``HEIGHTxWIDTH`` resize events and
its ``/v2/event`` documents, sent as the operator sends them (h2c) to a real recorder
process, read back through the API, the live event stream and the UI's pages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from recorder import kubernetes
from recorder.pages import pod_text
from recorder.sse import CastEvents
from tests.e2e.recorders import RecorderLoop
from tests.recorder.conftest import ALICE, SERVER, STRANGER, RecorderProc, event
from tests.recorder.h2upload import H2Upload

POD = {"PodName": "web-0", "Namespace": "shop", "Container": "app", "SessionType": "exec"}


def operator_header(**extra: Any) -> bytes:
    """The header as the operator's Go code marshals its CastHeader for ``kubectl exec``:
    SSH-only fields present but empty (no ``omitempty`` on them), ``env`` null, and the
    ``kubernetes`` object with Go's field names."""
    header: dict[str, Any] = {
        "version": 2, "width": 120, "height": 40, "timestamp": 1764061200,
        "command": "sh", "srcNode": "laptop.example.ts.net", "srcNodeID": "nLAP1",
        "srcNodeUser": "alice@example.com", "env": None, "sshUser": "", "localUser": "",
        "connectionID": "", "kubernetes": POD,
    }
    header.update(extra)
    return json.dumps(header, separators=(",", ":")).encode() + b"\n"


API_EVENT = {
    "type": "Kubernetes API Request", "id": "5f0a8a0e-3b1e-4bd8-9a55-0a3d8e1f3c11",
    "timestamp": "2026-11-25T09:00:00.123456789Z", "userAgent": "kubectl/v1.31.0",
    "request": {"method": "GET", "path": "/api/v1/namespaces/shop/pods", "body": None},
    "kubernetes": {"IsResourceRequest": True, "Path": "/api/v1/namespaces/shop/pods",
                   "Verb": "list", "APIPrefix": "api", "APIGroup": "", "APIVersion": "v1",
                   "Namespace": "shop", "Resource": "pods", "Subresource": "", "Name": "",
                   "Parts": ["pods"], "FieldSelector": "", "LabelSelector": ""},
    "source": {"node": "laptop.example.ts.net", "nodeID": "nLAP1",
               "nodeUser": "alice@example.com"},
    "localUser": "",
}


def test_session_fields_and_resize_spelling() -> None:
    header = json.loads(operator_header())
    k8s = kubernetes.session(header)
    assert k8s is not None and k8s.to_json() == {
        "pod": "web-0", "namespace": "shop", "container": "app", "sessionType": "exec"}
    assert kubernetes.resize(header, "50x132") == (132, 50)  # HEIGHTxWIDTH
    assert kubernetes.resize({"version": 2}, "132x50") == (132, 50)  # asciicast: COLSxROWS
    assert kubernetes.resize(header, "x50") is None
    assert kubernetes.resize(header, "1e3x5") is None
    assert kubernetes.session({"kubernetes": "web-0"}) is None  # claims of any JSON type
    assert kubernetes.session({"kubernetes": {"PodName": 7}}) is None
    assert pod_text({"header": header}) == "kubectl exec shop/web-0 (app)"
    assert pod_text({"header": {"version": 2}}) is None
    sse = CastEvents()
    sse.line(operator_header().rstrip(b"\n"))
    frame = sse.line(json.dumps([1.0, "r", "50x132"]).encode())
    assert b'"cols":132,"rows":50' in frame


@pytest.fixture
def ui_recorder(tmp_path: Path) -> Iterator[RecorderProc]:
    rec = RecorderProc(tmp_path, str(tmp_path / "store"), extra=["--ui"])
    try:
        rec.start()
        yield rec
    finally:
        rec.stop()


def _h2(rec: RecorderProc, source: str) -> httpx.Client:
    """An h2c client (prior knowledge), as the operator's ``clientHTTP2``."""
    transport = httpx.HTTPTransport(local_address=source, http1=False, http2=True)
    return httpx.Client(base_url=rec.url, transport=transport, timeout=10)


def test_v2_event_is_probed_and_stored(ui_recorder: RecorderProc, tmp_path: Path) -> None:
    body = json.dumps(API_EVENT).encode()
    with _h2(ui_recorder, SERVER) as c:
        head = c.head("/v2/event")  # the operator's supportsEvent probe
        assert head.status_code == 200 and head.http_version == "HTTP/2"
        r = c.post("/v2/event", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text
        assert c.post("/v2/event", content=b"[1, 2]").status_code == 400
        assert c.post("/v2/event", content=b"{not json").status_code == 400
        too_big = b'{"x": "' + b"a" * kubernetes.EVENT_LIMIT + b'"}'
        assert c.post("/v2/event", content=too_big).status_code == 413
    with _h2(ui_recorder, STRANGER) as c:  # not a tailnet node
        assert c.post("/v2/event", content=body).status_code == 403
    stored = sorted((tmp_path / "store" / "nSRV1").glob("*-event-*"))
    assert len(stored) == 1 and stored[0].read_bytes() == body + b"\n"
    with ui_recorder.client(ALICE) as c:  # an event is not a recording
        assert c.get("/api/v1/recordings").json()["recordings"] == []
        assert "tsrecorder_events_total 1.0" in c.get("/metrics").text


def test_operator_recording_metadata_live_events_and_pages(ui_recorder: RecorderProc) -> None:
    loop = RecorderLoop()
    try:
        up = loop.run(H2Upload.open("127.0.0.1", ui_recorder.port, local_address=SERVER))
        assert loop.run(up.wait_headers()) == 200
        body = (operator_header() + event(0.2, "/ # ") + event(0.9, "ls\r\n", "i")
                + event(1.0, "50x132", "r") + event(1.1, "bin  etc  usr\r\n"))
        loop.run(up.send(body))
        loop.run(up.wait_ack(len(body)))
        loop.run(up.end())
        loop.run(up.wait_end())
        loop.run(up.close())
    finally:
        loop.close()
    with ui_recorder.client(ALICE) as c:
        [meta] = c.get("/api/v1/recordings").json()["recordings"]
        assert meta["status"] == "complete"
        assert meta["kubernetes"] == {"pod": "web-0", "namespace": "shop",
                                      "container": "app", "sessionType": "exec"}
        assert meta["header"]["kubernetes"] == POD  # as sent
        assert c.get(f"/api/v1/recordings/{meta['id']}").json()["kubernetes"] == meta["kubernetes"]
        assert c.get(f"/api/v1/recordings/{meta['id']}/cast").content == body
        sse = c.get(f"/api/v1/recordings/{meta['id']}/events").text
        assert '"cols":120,"rows":40' in sse and '"r",{"cols":132,"rows":50}' in sse
        listing = c.get("/").text
        assert "kubectl exec shop/web-0 (app)" in listing
        page = c.get(f"/play/{meta['id']}").text
        for label, value in (("Pod", "web-0"), ("Namespace", "shop"), ("Container", "app"),
                             ("Session type", "exec")):
            assert f"<dt>{label}</dt><dd id=\"{label.lower().replace(' ', '-')}\">{value}</dd>" \
                in page
        assert "&quot;resizeSwapped&quot;: true" in page
