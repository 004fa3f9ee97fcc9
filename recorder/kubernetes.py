"""What Tailscale's Kubernetes operator sends a recorder (docs/recorder.md, "Kubernetes
recordings"), read without I/O.

Its API server proxy records ``kubectl exec`` and ``kubectl attach`` sessions as asciicast
over the same ``/v2/record`` upload as Tailscale SSH, with two differences a reader must
know: the header carries a ``kubernetes`` object (Go field names, no JSON tags: ``PodName``,
``Namespace``, ``Container``, ``SessionType``), and its ``"r"`` (resize) events are spelled
``HEIGHTxWIDTH`` where the asciicast format says ``COLSxROWS``. It also posts single JSON
documents (``"type": "Kubernetes API Request"``) to ``/v2/event``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# the header object's Go field names, and the names the recorder's metadata shows them by
FIELDS = (("PodName", "pod"), ("Namespace", "namespace"), ("Container", "container"),
          ("SessionType", "sessionType"))
EVENT_LIMIT = 1024 * 1024  # bytes of one /v2/event document; a request's body is in it


@dataclass(frozen=True)
class KubernetesSession:
    """The pod a recorded ``kubectl exec``/``attach`` ran in; empty strings where unsent."""

    pod: str
    namespace: str
    container: str
    session_type: str

    def to_json(self) -> dict[str, str]:
        return {"pod": self.pod, "namespace": self.namespace, "container": self.container,
                "sessionType": self.session_type}


def session(header: Mapping[str, Any]) -> KubernetesSession | None:
    """The header's ``kubernetes`` object, or None when the recording is not of a pod (or
    the object is not one: a header's fields are the uploader's claims, any JSON type)."""
    doc = header.get("kubernetes")
    if not isinstance(doc, dict):
        return None
    values = {ours: doc.get(go) for go, ours in FIELDS}
    text = {k: v if isinstance(v, str) else "" for k, v in values.items()}
    if not any(text.values()):
        return None
    return KubernetesSession(pod=text["pod"], namespace=text["namespace"],
                             container=text["container"], session_type=text["sessionType"])


def resize(header: Mapping[str, Any], data: str) -> tuple[int, int] | None:
    """An ``"r"`` event's ``(cols, rows)``: ``COLSxROWS`` as asciicast says, except in a
    recording from the Kubernetes operator, which writes ``HEIGHTxWIDTH``. None if the data
    is not two decimal numbers."""
    first, sep, second = data.partition("x")
    if not sep or not (first.isascii() and first.isdigit() and second.isascii()
                       and second.isdigit()) or len(first) > 6 or len(second) > 6:
        return None
    a, b = int(first), int(second)
    return (b, a) if resize_is_swapped(header) else (a, b)


def resize_is_swapped(header: Mapping[str, Any]) -> bool:
    """Whether this recording's resize events are ``HEIGHTxWIDTH`` (the player page turns
    them round before asciinema-player reads them): any recording whose header has a
    ``kubernetes`` object, since only the operator writes one."""
    return isinstance(header.get("kubernetes"), dict)
