"""Sans-I/O: terminal output → the lines of text a search looks at (docs/recorder.md, "Search").

An ECMA-48 parser (the state machine of the DEC/xterm family: ground, escape, CSI, control
strings) run over the output strings of a recording, with a one-line model of the screen
under it: printable characters are written at a cursor column, so a word typed, erased with
backspace and retyped is found as it was last shown, and an escape sequence inside a word does
not split it. Everything is carried across ``feed`` calls: an escape sequence, a control string
or a word may be split anywhere between two events and gives the same lines.

What it does not model, and why: vertical cursor movement (``CUU``, ``CUP``, erase display,
scrolling) ends the current line instead of moving to another row of a screen, because a search
wants the text that was printed, not a 24-row screen at some instant; full-screen programs
therefore yield fragments of what they drew, still searchable. Every code point counts as one
column (wide and combining characters are rare in commands). Control strings (OSC window
titles, DCS, SOS, PM, APC) are not text on the screen and are not indexed.

Fast paths: in the ground state a run of printable characters, and inside a control string a
run of its content, is found with one ``re`` search and taken as a slice, and a CSI sequence
that is whole within one event is read in one match and dispatched as the state machine would
(``fast=False`` turns this off; the tests check that both give the same lines). Everything
else — sequences split between events, controls inside a sequence, malformed ones — goes
through the state machine character by character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum, auto

MAX_LINE = 1024  # columns of one line; a longer logical line continues as the next line
TAB = 8
_MAX_PARAMS = 32  # characters of a CSI parameter string kept (the rest cannot matter here)
_MAX_PARAM_VALUE = 10_000  # a larger count is clamped: the line is MAX_LINE wide anyway

# C0 and C1 controls and DEL: everything the ground state must look at
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# what ends or interrupts an OSC string (BEL, CAN, SUB, ESC, ST) and any other control string
_OSC_STOP = re.compile("[\x07\x18\x1a\x1b\x9c]")
_STRING_STOP = re.compile("[\x18\x1a\x1b\x9c]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# printable characters and whole SGR sequences (which change no cell of the line model)
_TEXT_RUN = re.compile("(?:[^\x00-\x1f\x7f-\x9f]+|\x1b\\[[0-9;:]*m)+")
_SGR = re.compile("\x1b\\[[0-9;:]*m")
# a whole, well-formed CSI sequence (7-bit or C1 introducer): parameters, intermediates, final
_WHOLE_CSI = re.compile("(?:\x1b\\[|\x9b)([0-?]*)([ -/]*)([@-~])")

BEL, BS, HT, LF, VT, FF, CR = "\x07", "\x08", "\x09", "\x0a", "\x0b", "\x0c", "\x0d"
CAN, SUB, ESC, DEL = "\x18", "\x1a", "\x1b", "\x7f"
# C1 controls as code points (ECMA-48 §5.3); a UTF-8 recording carries them this way
IND, NEL, DCS, SOS, CSI, ST, OSC, PM, APC = (
    "\x84", "\x85", "\x90", "\x98", "\x9b", "\x9c", "\x9d", "\x9e", "\x9f"
)
# CSI finals that move the cursor to another row or change rows: they end the current line
_ROW_FINALS = frozenset("ABEFHJLMSTdefr")
_LINE_FINALS = _ROW_FINALS | frozenset("CaDG`KXP@")  # every CSI final that changes the line


class _State(Enum):
    GROUND = auto()
    ESCAPE = auto()
    ESCAPE_INTERMEDIATE = auto()
    CSI_PARAM = auto()
    CSI_INTERMEDIATE = auto()
    CSI_IGNORE = auto()
    OSC_STRING = auto()
    CONTROL_STRING = auto()  # DCS, SOS, PM, APC: all skipped up to ST
    STRING_ESCAPE = auto()  # ESC seen inside a control string: ST if a backslash follows


@dataclass(frozen=True)
class Line:
    """A line of output as it was last shown, and the time it was last written (its last
    printed character, seconds from the start of the recording): a player seeking to a
    search hit's time shows the whole line, not the prompt a command was typed after."""

    time: float
    text: str


@dataclass
class TerminalText:
    """Feed it ``(time, text)`` output events; it returns the lines they complete.

    ``partial()`` is the line still being written (a prompt, a command being typed) and
    ``end()`` completes it. Lines that are blank once trailing and leading spaces are removed
    are not returned.
    """

    max_line: int = MAX_LINE
    fast: bool = True
    _state: _State = _State.GROUND
    _line: str = ""  # the cells of the current line, from column 0
    _col: int = 0
    _time: float | None = None  # when the current line was last printed to
    _params: str = ""
    _intermediates: str = ""
    _osc: bool = False  # the control string being skipped is an OSC (BEL ends it too)
    _high: str = ""  # a high surrogate that ended the previous event, waiting for its pair
    _now: float = 0.0  # the time of the event being fed
    _out: list[Line] = field(default_factory=list)

    def feed(self, time: float, text: str) -> list[Line]:
        self._now = time
        if self._high:
            text, self._high = self._high + text, ""
        if _SURROGATE.search(text):
            text = self._surrogates(text)
        i, n = 0, len(text)
        while i < n:
            state = self._state
            if state is _State.GROUND:
                if self.fast:
                    run = _TEXT_RUN.match(text, i)
                    if run is not None:
                        chars = run.group()
                        if "\x1b" in chars:
                            chars = _SGR.sub("", chars)
                        if chars:
                            self._print(time, chars)
                        i = run.end()
                        if i >= n:
                            break
                m = _CONTROL.search(text, i)
                end = n if m is None else m.start()
                if end > i:
                    self._print(time, text[i:end])
                if m is None:
                    break
                i = end
                ch = text[i]
                if ch == LF:  # the commonest controls, without a call
                    self._newline()
                    i += 1
                    continue
                if ch == CR:
                    self._col = 0
                    i += 1
                    continue
                if self.fast:
                    whole = _WHOLE_CSI.match(text, i)
                    if whole is not None:
                        self._params = whole.group(1)[:_MAX_PARAMS]
                        self._intermediates = whole.group(2)
                        self._csi(whole.group(3))
                        i = whole.end()
                        continue
                self._ground_control(text[i])
            elif state is _State.OSC_STRING or state is _State.CONTROL_STRING:
                m = (_OSC_STOP if state is _State.OSC_STRING else _STRING_STOP).search(text, i)
                if m is None:
                    break
                i = m.start()
                self._string_stop(text[i])
            else:
                self._escape_char(text[i])
            i += 1
        out, self._out = self._out, []
        return out

    def partial(self) -> Line | None:
        text = self._line.strip()
        return Line(self._time, text) if text and self._time is not None else None

    def end(self) -> list[Line]:
        """The output ended: the line being written is complete (an unfinished escape
        sequence is dropped)."""
        self._newline()
        self._state = _State.GROUND
        self._high = ""
        out, self._out = self._out, []
        return out

    # -- text --------------------------------------------------------------------------

    def _surrogates(self, text: str) -> str:
        """JSON strings may carry UTF-16 surrogates as escapes: a pair becomes its character,
        one split across two events is joined, a lone one becomes U+FFFD (the index stores
        UTF-8, which has no surrogates)."""
        if "\ud800" <= text[-1] <= "\udbff":
            text, self._high = text[:-1], text[-1]
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")

    def _print(self, time: float, run: str) -> None:
        while run:
            if self._col >= self.max_line:
                self._newline()  # a soft wrap: the line goes on as the next one
            room = self.max_line - self._col
            chunk, run = run[:room], run[room:]
            self._time = time
            line, col = self._line, self._col
            if col == len(line):
                self._line = line + chunk
            elif col > len(line):
                self._line = line + " " * (col - len(line)) + chunk
            else:
                self._line = line[:col] + chunk + line[col + len(chunk) :]
            self._col = col + len(chunk)

    def _newline(self) -> None:
        line = self.partial()
        if line is not None:
            self._out.append(line)
        self._line = ""
        self._time = None
        self._col = 0

    def _move_to(self, col: int) -> None:
        self._col = max(0, min(col, self.max_line))

    # -- C0 and C1 controls --------------------------------------------------------------

    def _ground_control(self, ch: str) -> None:
        if ch == ESC:
            self._enter(_State.ESCAPE)
        elif ch == CSI:
            self._enter(_State.CSI_PARAM)
        elif ch == OSC:
            self._start_string(osc=True)
        elif ch in (DCS, SOS, PM, APC):
            self._start_string(osc=False)
        elif ch in (IND, NEL):
            self._newline()
        else:
            self._execute(ch)

    def _execute(self, ch: str) -> None:
        """A C0 control; the ones that do not move the cursor (BEL, SO, SI, NUL...) and
        DEL do nothing here."""
        if ch == BS:
            self._move_to(self._col - 1)
        elif ch == CR:
            self._col = 0
        elif ch in (LF, VT, FF):
            self._newline()
        elif ch == HT:
            self._move_to((self._col // TAB + 1) * TAB)

    # -- escape sequences ----------------------------------------------------------------

    def _enter(self, state: _State) -> None:
        self._state = state
        self._params = ""
        self._intermediates = ""

    def _start_string(self, *, osc: bool) -> None:
        self._state = _State.OSC_STRING if osc else _State.CONTROL_STRING
        self._osc = osc

    def _string_stop(self, ch: str) -> None:
        if ch == ESC:
            self._state = _State.STRING_ESCAPE
        else:  # BEL (OSC only), ST, CAN, SUB
            self._state = _State.GROUND

    def _escape_char(self, ch: str) -> None:
        """One character in an escape sequence or CSI (the states a run cannot skip)."""
        state = self._state
        if ch in (CAN, SUB):
            self._state = _State.GROUND
            return
        if state is _State.STRING_ESCAPE:
            self._state = _State.GROUND
            if ch == "\\":
                return
            # ESC ended the string and begins a new sequence with ch
            self._enter(_State.ESCAPE)
            state = _State.ESCAPE
        if ch == ESC:
            self._enter(_State.ESCAPE)
            return
        if ch < " ":
            self._execute(ch)  # C0 controls act even inside a sequence
            return
        if ch == DEL:
            return
        if ch >= "\x80":
            # not part of any sequence: the sequence is cut short and ch is handled as output
            self._state = _State.GROUND
            if _CONTROL.match(ch):
                self._ground_control(ch)
            else:
                self._print(self._now, ch)
            return
        if state is _State.ESCAPE:
            self._escape(ch)
        elif state is _State.ESCAPE_INTERMEDIATE:
            if ch < "0":
                self._intermediates += ch
            else:
                self._state = _State.GROUND  # nF sequences (charset choice): nothing to do
        elif state is _State.CSI_PARAM:
            if "0" <= ch <= "?":
                if len(self._params) < _MAX_PARAMS:
                    self._params += ch
            elif ch < "0":
                self._intermediates += ch
                self._state = _State.CSI_INTERMEDIATE
            else:
                self._state = _State.GROUND
                self._csi(ch)
        elif state is _State.CSI_INTERMEDIATE:
            if ch < "0":
                self._intermediates += ch[: max(0, 4 - len(self._intermediates))]
            elif ch <= "?":
                self._state = _State.CSI_IGNORE  # a parameter after an intermediate
            else:
                self._state = _State.GROUND  # no CSI with intermediates moves the cursor
        elif state is _State.CSI_IGNORE and ch >= "@":
            self._state = _State.GROUND

    def _escape(self, ch: str) -> None:
        if ch < "0":
            self._intermediates = ch
            self._state = _State.ESCAPE_INTERMEDIATE
            return
        self._state = _State.GROUND
        if ch == "[":
            self._enter(_State.CSI_PARAM)
        elif ch == "]":
            self._start_string(osc=True)
        elif ch in "PX^_":
            self._start_string(osc=False)
        elif ch in "DEMc":  # IND, NEL, RI, RIS: another row
            self._newline()
        # anything else (ESC 7, ESC 8, ESC =, ESC \ alone...) leaves the line as it is

    def _csi(self, final: str) -> None:
        params = self._params
        if final not in _LINE_FINALS or params[:1] in ("<", "=", ">", "?") or self._intermediates:
            return  # SGR, private modes (cursor visibility, alternate screen...): no text
        values = [
            min(int(p), _MAX_PARAM_VALUE) if p.isdigit() else 0
            for p in params.split(";")
        ]
        n = max(1, values[0])
        if final in ("C", "a"):  # CUF, HPR
            self._move_to(self._col + n)
        elif final == "D":  # CUB
            self._move_to(self._col - n)
        elif final in ("G", "`"):  # CHA, HPA
            self._move_to(n - 1)
        elif final == "K":  # EL
            self._erase_line(values[0])
        elif final == "X":  # ECH
            self._blank(self._col, self._col + n)
        elif final == "P":  # DCH
            self._line = self._line[: self._col] + self._line[self._col + n :]
        elif final == "@":  # ICH
            line, col = self._line, self._col
            if col < len(line):
                self._line = (line[:col] + " " * n + line[col:])[: self.max_line]
        elif final in _ROW_FINALS:
            col = self._col
            self._newline()
            if final in ("H", "f"):  # CUP: row;column
                self._move_to((values[1] if len(values) > 1 and values[1] else 1) - 1)
            elif final not in ("E", "F"):  # CNL, CPL go to column 1
                self._move_to(col)

    def _erase_line(self, mode: int) -> None:
        if mode == 0:
            self._line = self._line[: self._col]
        elif mode == 1:
            self._blank(0, self._col + 1)
        elif mode == 2:
            self._line = ""
        if not self._line.strip():
            self._time = None  # an erased line is empty until its next character

    def _blank(self, start: int, end: int) -> None:
        end = min(end, len(self._line))
        if start < end:
            self._line = self._line[:start] + " " * (end - start) + self._line[end:]
