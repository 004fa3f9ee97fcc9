"""Sans-I/O: what a ``q=`` search asks for, and what a recording's metadata line says.

The query syntax (docs/recorder.md, "Search"): words separated by spaces and phrases in double
quotes; a word ending in ``*`` is a prefix. A line matches when it holds every word and
phrase; a recording matches when one of its lines does, its metadata counting as one more
line. Words are compared as the index tokenizes text (letters and digits; case and accents do
not matter), so ``rm -rf`` finds ``rm -rf``, ``rm  -rf`` and ``RM -RF``. Every index renders
the terms in its own syntax with each term quoted, so user input never becomes query syntax.
"""

from __future__ import annotations

import re
import unicodedata
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


def words(text: str) -> str:
    """``text`` as the index's words, space-separated: runs of letters and digits, lowercased,
    accents removed (what SQLite's ``unicode61 remove_diacritics 2`` tokenizer yields). An
    index whose own tokenizer knows more (PostgreSQL's parser reads paths, hosts, e-mail
    addresses and hyphenated words as single tokens) is fed this, so that every index
    compares words alike."""
    out: list[str] = []
    for ch in unicodedata.normalize("NFKD", text.casefold()):
        if ch.isalnum():
            out.append(ch)
        elif unicodedata.combining(ch):
            continue  # the accent of the letter before it
        elif out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


def excerpt(text: str, terms: tuple[Term, ...], width: int = 200, around: int = 12) -> str:
    """A long matching line cut to the ``around`` words either side of its first hit, with
    ``…`` where it was cut (a line of at most ``width`` characters is returned whole)."""
    if len(text) <= width:
        return text
    spans = [(m.start(), m.end(), words(m.group())) for m in _WORD.finditer(text)]
    firsts = [(w[0], t.prefix and len(w) == 1) for t in terms if (w := words(t.text).split())]
    hit = next((i for i, (_, _, w) in enumerate(spans)
                if any(w == f or (prefix and w.startswith(f)) for f, prefix in firsts)), 0)
    if not spans:
        return text[:width] + "…"
    lo, hi = max(0, hit - around), min(len(spans) - 1, hit + around)
    start, end = spans[lo][0], spans[hi][1]
    return ("…" if start > 0 else "") + text[start:end] + ("…" if end < len(text) else "")


_WORD = re.compile(r"[^\W_]+")
