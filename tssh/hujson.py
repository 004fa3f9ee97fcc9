"""HuJSON as Tailscale reads it: JSON plus ``//`` and ``/* */`` comments and trailing commas.

Nothing more: no single quotes, no unquoted keys, no NaN or Infinity, no hex numbers. Unlike the
standard library's json module this parser also refuses duplicate object keys (a policy with two
``"ssh"`` sections is a mistake, never intended), bounds nesting depth, and can say where each
value starts so that a validator can point at ``file:line:col``. Positions are found when an
error asks for one, by reading the text again: keeping one per value would cost far more than
the values themselves.

Errors are :class:`tssh.errors.PolicyError` with the position and what was expected.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from tssh.errors import PolicyError

MAX_DEPTH = 128

# A value's place in the document: keys and indices from the root, e.g. ("ssh", 0, "users").
Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    line: int
    col: int


@dataclass(frozen=True)
class Document:
    """A parsed document, and its text to find where its values start."""

    value: Any
    text: str = field(repr=False)
    filename: str

    def position(self, path: Path) -> Position | None:
        """The position of ``path``, or of its nearest enclosing value that has one."""
        parser = _Parser(self.text, self.filename, locate=path)
        parser.document()
        while True:
            if path in parser.positions:
                return parser.positions[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path, message: str) -> PolicyError:
        """A PolicyError located at ``path`` in this document."""
        pos = self.position(path)
        if pos is None:
            return PolicyError(message, file=self.filename)
        return PolicyError(message, file=self.filename, line=pos.line, col=pos.col)


_SPACE = re.compile(r"(?:[ \t\n\r]+|//[^\n]*|/\*(?:[^*]|\*(?!/))*\*/)*")
_STRING_CHUNK = re.compile(r'[^"\\\x00-\x1f]*')
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX4 = re.compile(r"[0-9a-fA-F]{4}")


def loads(text: str | bytes, *, filename: str = "<string>") -> Any:
    """Parse HuJSON ``text`` into plain Python values (dict, list, str, int, float, bool, None)."""
    return parse(text, filename=filename).value


def parse(text: str | bytes, *, filename: str = "<string>") -> Document:
    """Parse HuJSON and keep the position of every value."""
    if isinstance(text, bytes):
        text = _decode(text, filename)
    parser = _Parser(text, filename)
    return Document(parser.document(), text, filename)


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8")
        line = good.count("\n") + 1
        col = len(good) - (good.rfind("\n") + 1) + 1
        raise PolicyError(
            f"invalid UTF-8 (byte 0x{data[e.start]:02x}); the file must be UTF-8 text",
            file=filename, line=line, col=col,
        ) from None


class _Parser:
    def __init__(self, text: str, filename: str, *, locate: Path | None = None) -> None:
        self.text = text
        self.filename = filename
        self.pos = 0
        # With ``locate``, the positions of that value and of the values enclosing it.
        self.positions: dict[Path, Position] = {}
        self._locate = locate

    # -- positions and errors ------------------------------------------------------------

    @cached_property
    def _line_starts(self) -> list[int]:
        """Offsets of line starts, for turning an offset into line:col only when needed."""
        return [0, *(m.end() for m in re.finditer("\n", self.text))]

    def where(self, offset: int) -> Position:
        line = bisect.bisect_right(self._line_starts, offset) - 1
        return Position(line + 1, offset - self._line_starts[line] + 1)

    def fail(self, message: str, offset: int | None = None) -> PolicyError:
        p = self.where(self.pos if offset is None else offset)
        return PolicyError(message, file=self.filename, line=p.line, col=p.col)

    def found(self) -> str:
        if self.pos >= len(self.text):
            return "end of file"
        ch = self.text[self.pos]
        return repr(ch) if ch.isprintable() else f"character U+{ord(ch):04X}"

    # -- grammar -------------------------------------------------------------------------

    def skip_space(self) -> None:
        m = _SPACE.match(self.text, self.pos)
        assert m is not None  # the pattern matches the empty string
        self.pos = m.end()
        if self.text.startswith("/*", self.pos):
            raise self.fail("unterminated /* comment")
        if self.text.startswith("/", self.pos):
            raise self.fail("expected // or /* to start a comment")

    def document(self) -> Any:
        if self.text.startswith("\ufeff"):
            raise self.fail("byte order mark (BOM) not allowed; save the file as plain UTF-8")
        self.skip_space()
        value = self.value((), 0)
        self.skip_space()
        if self.pos != len(self.text):
            raise self.fail(f"expected end of file after the top-level value, found {self.found()}")
        return value

    def value(self, path: Path, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH} levels")
        locate = self._locate
        if locate is not None and path == locate[: len(path)]:
            self.positions[path] = self.where(self.pos)
        text, pos = self.text, self.pos
        ch = text[pos] if pos < len(text) else ""
        if ch == "{":
            return self.object(path, depth)
        if ch == "[":
            return self.array(path, depth)
        if ch == '"':
            return self.string()
        if ch == "-" or ch.isdigit():
            return self.number()
        for word, result in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, pos):
                self.pos += len(word)
                return result
        raise self.fail(f"expected a value (object, array, string, number, true, false or null), "
                        f"found {self.found()}")

    def object(self, path: Path, depth: int) -> dict[str, Any]:
        self.pos += 1  # {
        result: dict[str, Any] = {}
        while True:
            self.skip_space()
            if self.text.startswith("}", self.pos):
                self.pos += 1
                return result
            if not self.text.startswith('"', self.pos):
                raise self.fail(f'expected a "quoted" key or }}, found {self.found()}')
            key_at = self.pos
            key = self.string()
            if key in result:
                raise self.fail(f"duplicate key {key!r}", key_at)
            self.skip_space()
            if not self.text.startswith(":", self.pos):
                raise self.fail(f"expected ':' after key {key!r}, found {self.found()}")
            self.pos += 1
            self.skip_space()
            result[key] = self.value((*path, key), depth + 1)
            self.skip_space()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif self.text.startswith("}", self.pos):
                self.pos += 1
                return result
            else:
                raise self.fail(f"expected ',' or '}}' after a member, found {self.found()}")

    def array(self, path: Path, depth: int) -> list[Any]:
        self.pos += 1  # [
        result: list[Any] = []
        while True:
            self.skip_space()
            if self.text.startswith("]", self.pos):
                self.pos += 1
                return result
            result.append(self.value((*path, len(result)), depth + 1))
            self.skip_space()
            if self.text.startswith(",", self.pos):
                self.pos += 1
            elif self.text.startswith("]", self.pos):
                self.pos += 1
                return result
            else:
                raise self.fail(f"expected ',' or ']' after an element, found {self.found()}")

    def string(self) -> str:
        start = self.pos
        self.pos += 1  # opening quote
        parts: list[str] = []
        text = self.text
        while True:
            m = _STRING_CHUNK.match(text, self.pos)
            assert m is not None
            parts.append(m.group())
            self.pos = m.end()
            if self.pos >= len(text):
                raise self.fail("unterminated string", start)
            ch = text[self.pos]
            if ch == '"':
                self.pos += 1
                return "".join(parts)
            if ch != "\\":
                raise self.fail(f"control character U+{ord(ch):04X} in a string; escape it")
            parts.append(self.escape())

    def escape(self) -> str:
        self.pos += 1  # backslash
        ch = self.text[self.pos : self.pos + 1]
        if ch in _ESCAPES:
            self.pos += 1
            return _ESCAPES[ch]
        if ch != "u":
            raise self.fail(f"invalid escape \\{ch} in a string")
        code = self.hex4()
        if 0xD800 <= code < 0xDC00 and self.text.startswith("\\u", self.pos):
            save = self.pos
            self.pos += 1
            low = self.hex4()
            if 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
            self.pos = save
        if 0xD800 <= code < 0xE000:
            return "\ufffd"  # a lone surrogate, as Go's decoder does
        return chr(code)

    def hex4(self) -> int:
        self.pos += 1  # the 'u'
        m = _HEX4.match(self.text, self.pos)
        if m is None:
            raise self.fail("expected four hex digits after \\u")
        self.pos = m.end()
        return int(m.group(), 16)

    def number(self) -> int | float:
        m = _NUMBER.match(self.text, self.pos)
        if m is None:
            raise self.fail(f"expected a number, found {self.found()}")
        self.pos = m.end()
        if self.pos < len(self.text) and (self.text[self.pos].isalnum() or self.text[self.pos]
                                          in "._"):
            raise self.fail(f"invalid number, unexpected {self.found()}")
        literal = m.group()
        if any(c in literal for c in ".eE"):
            value = float(literal)
            if value in (float("inf"), float("-inf")):
                raise self.fail("number out of range", m.start())
            return value
        if len(literal) > 400:
            raise self.fail("number too long", m.start())
        return int(literal)
