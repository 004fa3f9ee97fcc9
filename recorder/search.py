"""Sans-I/O: what a ``q=`` search asks for, and what a recording's metadata line says.

The query syntax (docs/recorder.md, "Search"): words separated by spaces and phrases in double
quotes; a word ending in ``*`` is a prefix. A line matches when it holds every word and
phrase; a recording matches when one of its lines does, its metadata counting as one more
line. Words are compared as the index tokenizes text (letters and digits; case and accents do
not matter), so ``rm -rf`` finds ``rm -rf``, ``rm  -rf`` and ``RM -RF``. Every index renders
the terms in its own syntax with each term quoted, so user input never becomes query syntax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recorder.model import RecordingMeta

MAX_TERMS = 16  # a longer query is cut: every term costs a posting list walk


@dataclass(frozen=True)
class Term:
    text: str  # as the user typed it (a phrase without its quotes)
    phrase: bool = False
    prefix: bool = False


def _searchable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def parse_query(q: str) -> tuple[Term, ...]:
    """Words and "quoted phrases"; an unclosed quote runs to the end. Terms without a letter
    or digit (``--``, ``|``) are dropped: the index has no token for them."""
    terms: list[Term] = []
    i, n = 0, len(q)
    while i < n and len(terms) < MAX_TERMS:
        if q[i].isspace():
            i += 1
            continue
        if q[i] == '"':
            end = q.find('"', i + 1)
            end = n if end < 0 else end
            text = q[i + 1 : end].strip()
            if _searchable(text):
                terms.append(Term(" ".join(text.split()), phrase=True))
            i = end + 1
            continue
        end = i
        while end < n and not q[end].isspace() and q[end] != '"':
            end += 1
        word = q[i:end]
        prefix = word.endswith("*")
        word = word.rstrip("*")
        if _searchable(word):
            terms.append(Term(word, prefix=prefix))
        i = end
    return tuple(terms)


def metadata_text(meta: RecordingMeta) -> str:
    """The searchable line of a recording's metadata: its id, the uploading node, and every
    string in its header (users, command, client node, connection id, tags)."""
    parts: list[str] = [meta.id, meta.node.name, meta.node.user or "", *meta.node.tags]

    def walk(value: Any, depth: int) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list) and depth < 2:
            for v in value:
                walk(v, depth + 1)

    for name, value in sorted(meta.header.items()):
        if name != "env":  # TERM and such: the same in every recording
            walk(value, 0)
    return " ".join(p for p in parts if p)
