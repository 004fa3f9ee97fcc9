"""The encoder writes, byte for byte, what json.dumps on the decoded text writes.

The encoder escapes valid UTF-8 as bytes (fast); ``Reference`` below is the straightforward
way it replaced (an incremental decoder, then json.dumps on the text), kept here as the oracle.
"""

import codecs
import itertools
import json
from collections.abc import Iterable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tssh.identity.base import Peer
from tssh.recording import asciicast
from tssh.recording.asciicast import CastEncoder, CastHeader

PEER = Peer(name="laptop.example.ts.net", id="nLAP1", addresses=(), user="alice@example.com",
            user_id="12345")
LINE_BREAKS = ("\x85", "\u2028", "\u2029")


def header(*, stderr: bool = True, input: bool = True, **kw: Any) -> CastHeader:
    base: dict[str, Any] = dict(ssh_user="alice", local_user="alice", connection_id="c",
                                started_at=0.0, includes_stderr=stderr, includes_input=input)
    base.update(kw)
    return CastHeader.for_session(PEER, **base)


def escape_line_breaks(text: str) -> str:
    for char in LINE_BREAKS:
        text = text.replace(char, f"\\u{ord(char):04x}")
    return text


def json_line(obj: object) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return (escape_line_breaks(text) + "\n").encode("utf-8", "replace")


class Reference:
    """The encoder as first written: codecs' incremental decoder, then json.dumps."""

    def __init__(self, header: CastHeader, start: float) -> None:
        self.header = header
        self.start = start
        self.last = 0.0
        self.decoders = {name: codecs.getincrementaldecoder("utf-8")("replace")
                         for name in ("output", "stderr", "input")}

    def header_line(self) -> bytes:
        return json_line(self.header.to_json())

    def read(self, stream: str, now: float, data: bytes) -> bytes:
        if stream == "stderr" and not self.header.includes_stderr:
            return b""
        if stream == "input" and not self.header.includes_input:
            return b""
        return self.decoded(now, stream, data)

    def decoded(self, now: float, stream: str, data: bytes, final: bool = False) -> bytes:
        decoder = self.decoders[stream]
        text = decoder.decode(data, final)
        if final:
            decoder.reset()
        return self.event(now, "i" if stream == "input" else "o", text) if text else b""

    def finish(self, now: float) -> bytes:
        return b"".join(self.decoded(now, stream, b"", final=True) for stream in self.decoders)

    def event(self, now: float, code: str, text: str) -> bytes:
        self.last = seconds = round(max(now - self.start, self.last), 6)
        stamp = f"{seconds:.6f}".rstrip("0").rstrip(".") or "0"
        body = escape_line_breaks(json.dumps(text, ensure_ascii=False))
        return f'[{stamp},"{code}",{body}]\n'.encode("utf-8", "replace")


Op = tuple[Any, ...]


def run(ops: Iterable[Op], hdr: CastHeader | None = None, start: float = 0.0) -> None:
    """Feeds the same operations to both encoders; every result must be the same bytes."""
    hdr = hdr or header()
    enc, ref = CastEncoder(hdr, start), Reference(hdr, start)
    assert enc.header_line() == ref.header_line()
    for op in ops:
        kind, now, *args = op
        if kind in ("output", "stderr", "input"):
            got = getattr(enc, kind)(now, *args)
            want = ref.read(kind, now, *args)
        elif kind == "resize":
            got, want = enc.resize(now, *args), ref.event(now, "r", "{}x{}".format(*args))
        elif kind == "marker":
            got, want = enc.marker(now, *args), ref.event(now, "m", *args)
        elif kind == "exit":
            got, want = enc.exit(now, *args), ref.finish(now) + ref.event(now, "x", str(*args))
        else:
            assert kind == "finish"
            got, want = enc.finish(now), ref.finish(now)
        assert got == want, op
        got.decode("utf-8")  # always valid UTF-8 (the reference's "replace" says so)
        assert all(json.loads(line) for line in got.splitlines())  # one event per line


def reads(stream: str, data: bytes, cuts: Iterable[int] = (), now: float = 1.0) -> list[Op]:
    """``data`` as reads of ``stream`` cut at ``cuts`` (taken modulo its length)."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [(stream, now, data[a:b]) for a, b in itertools.pairwise(bounds)]


def text_of(data: bytes) -> str:
    enc = CastEncoder(header(), 0.0)
    lines = enc.output(1.0, data) + enc.finish(2.0)
    return "".join(json.loads(line)[2] for line in lines.splitlines())


# -- arbitrary input --------------------------------------------------------------------------

SPECIAL_PIECES = [
    b"\r\n", b"\x1b[0m", b"\x1b[01;34m", b"\\", b'"', b"\\u001b", b'\\"', b"\x7f", b"\xff",
    b"\xc2", b"\xe2\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80",
    *(c.encode() for c in (*LINE_BREAKS, *"é日😀\ufffd─")),
]
PIECES = st.one_of(
    st.binary(max_size=12),
    st.text(max_size=12).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(0, 0x1F).map(lambda b: bytes((b,))),
    st.sampled_from(SPECIAL_PIECES),
)
# Mostly short, sometimes long (a repeated pattern, up to ~130 KiB), with bytes to escape
# dense or sparse (padded with plain text).
DATA = st.builds(lambda pieces, pad, times: (b"".join(pieces) + pad) * times,
                 st.lists(PIECES, max_size=16),
                 st.sampled_from([b"", b"plain text ", "naïve 日本 ".encode() * 4, b"x" * 90]),
                 st.one_of(st.just(1), st.integers(2, 700)))
STEP = st.one_of(st.just(0.0), st.floats(-1.0, 3.0), st.floats(0.0, 1e-5))
READ_OPS = st.tuples(st.sampled_from(["output", "stderr", "input"]), STEP, DATA,
                     st.lists(st.integers(0, 1 << 20), max_size=6))
OTHER_OPS = st.one_of(
    st.tuples(st.just("resize"), STEP, st.integers(0, 1000), st.integers(0, 1000)),
    st.tuples(st.just("marker"), STEP, st.text(max_size=10)),
    st.tuples(st.just("exit"), STEP, st.integers(-1, 255)),
    st.tuples(st.just("finish"), STEP),
)


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.one_of(READ_OPS, OTHER_OPS), max_size=10),
       stderr=st.booleans(), input=st.booleans(), start=st.floats(-10.0, 1e9))
def test_same_bytes_as_reference_for_any_reads(steps: list[Op], stderr: bool, input: bool,
                                               start: float) -> None:
    ops: list[Op] = []
    now = start
    for step in steps:
        now += step[1]
        if step[0] in ("output", "stderr", "input"):
            ops += reads(step[0], step[2], step[3], now)
        else:
            ops.append((step[0], now, *step[2:]))
    run(ops, header(stderr=stderr, input=input), start)


@settings(max_examples=100, deadline=None)
@given(seconds=st.floats(0.0, 1e12))
def test_times_written_as_reference(seconds: float) -> None:
    run([("output", seconds, b"x"), ("marker", seconds + 1e-7, "m")])


# -- focused cases ----------------------------------------------------------------------------

LONG_TEXT = b"-rw-r--r--  1 alice alice  4096 Jan  1 00:00 \x1b[01;34mname\x1b[0m\r\n" * 700
LONG_UTF8 = "│ ├── naïve café 日本語 ─┼─\r\n".encode() * 1200


def test_every_control_byte_alone_in_long_text_and_dense() -> None:
    for byte in (*range(0x20), 0x7F):
        b = bytes((byte,))
        ops: list[Op] = [("output", 1.0, b), ("output", 2.0, b"a" * 10 + b + b"z")]
        for body in (LONG_TEXT, LONG_UTF8):
            ops += [("output", 3.0, b + body), ("output", 4.0, body[:-7] + b + body[-7:]),
                    ("output", 5.0, body + b)]
        ops += [("output", 6.0, b * 40000), ("output", 7.0, b * 5 + LONG_TEXT + b * 9000)]
        run(ops)
        assert text_of(b"x" + b + b"y") == f"x{chr(byte)}y"


def test_sizes_around_the_encoders_thresholds() -> None:
    # The encoder uses json.dumps on short input, lists the bytes to escape exactly up to
    # _EXACT bytes, and beyond searches for each kind and judges density on a sample: a byte
    # first, last, just past the sample, in sparse or dense input, is escaped at every size.
    sizes = {n + d for n in (asciicast._SHORT, asciicast._EXACT, asciicast._SAMPLE)
             for d in (-1, 0, 1)}
    sparse = b"\\ab\x1bcdefghijklmnopqrstuvwxyz0123456789\r\n"  # a tenth to escape
    for size in sorted(sizes):
        for byte in (0x00, 0x01, 0x0E, 0x1F, ord("\\"), ord('"'), ord("\r")):
            b = bytes((byte,))
            run([("output", 1.0, b"a" * (size - 1) + b), ("output", 2.0, b + b"a" * (size - 1)),
                 ("output", 3.0, (b"ab\r\n" * size)[:size - 1] + b),
                 ("output", 4.0, (b"a\r\n\x1b" * size)[:size - 1] + b),
                 ("output", 5.0, (sparse * size)[:size - 1] + b),
                 ("output", 6.0, b"a" * asciicast._SAMPLE + b + b"a" * (size - 1))])


def test_quotes_and_backslashes_are_escaped_once() -> None:
    line = (b'C:\\path\\to "file" \\x1b\\n\\"\x1b[0m and plain text, so that it is sparse: '
            b"a tenth of the bytes, not more, are to be escaped\r\n")
    for data in (b'\\', b'"', b'\\"', b'"\\', b"\\\\u001b\\n\n", b'\\x1b\\"' * 3000,
                 b'\\' * 5000 + b'"' * 5000, LONG_TEXT.replace(b"name", b'"n\\a\\me"'),
                 line * 20, line * 100, line * 500):
        run([("output", 1.0, data)])
        assert text_of(data) == data.decode()


def test_unicode_line_breaks_are_escaped_raw_and_split_across_reads() -> None:
    for char in LINE_BREAKS:
        raw = char.encode()
        for data in (raw, b"a" + raw + b"b", LONG_TEXT + raw, LONG_UTF8 + raw + LONG_UTF8,
                     raw * 9000):
            for cut in range(len(raw) + 1):
                ops = reads("output", data, (len(data) - len(raw) + cut,))
                ops.insert(1, ("output", 1.0, b""))  # an empty read between the parts
                run(ops)
            enc = CastEncoder(header(), 0.0)
            line = enc.output(1.0, data)
            assert raw not in line and len(line.decode().splitlines()) == 1
            assert json.loads(line)[2] == data.decode()


def test_invalid_utf8_becomes_replacement_characters_as_reference() -> None:
    cases = [b"\xff", b"\x80abc", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xe2\x82", "\ufffd".encode(), LONG_TEXT + b"\xfe" + LONG_TEXT,
             LONG_UTF8[:-1] + b"\xc3"]
    for data in cases:
        run([*reads("output", data, (1, 2)), ("output", 2.0, b"tail"), ("finish", 3.0)])
    # A partial character followed by ASCII: one U+FFFD, then the ASCII.
    run([("output", 1.0, b"ok \xe2\x82"), ("output", 2.0, b"abc" * 3000)])
    assert text_of(b"a\xffb\xe2\x82") == "a\ufffdb\ufffd"


def test_empty_reads_write_nothing_and_keep_a_split_character() -> None:
    enc = CastEncoder(header(), 0.0)
    assert enc.output(1.0, b"") == b""
    assert enc.output(1.0, b"\xe2") == b""
    assert enc.output(1.0, b"") == b""
    assert enc.output(2.0, b"\x82\xac") == '[2,"o","€"]\n'.encode()
    run([("output", 1.0, b""), ("output", 1.0, b"\xf0\x9f"), ("output", 1.0, b""),
         ("output", 2.0, b"\x98"), ("output", 2.0, b""), ("output", 3.0, b"\x80!")])


def test_dense_output_either_way_as_reference() -> None:
    # Dense escapes (json.dumps on the text) and sparse ones (bytes), and heads that say the
    # opposite of the rest.
    dense = [b"\x00" * 65536, b"\r\n" * 30000, b"\x1b[m" * 20000, b"\n\r\t\b\f\x01" * 5000]
    for data in dense:
        run([("output", 1.0, data), ("output", 2.0, data + LONG_TEXT),
             ("output", 3.0, LONG_TEXT + data), ("output", 4.0, LONG_UTF8 + data)])


def test_header_and_marker_strings_with_surrogates_and_line_breaks() -> None:
    # Lone surrogates cannot come from the decoder, but header and marker strings may hold
    # them: they are written as "?", as before.
    odd = "x\ud800y\u2028z\x85\udfff\"\\\x1b"
    hdr = header(command=odd, ssh_user=odd, term=odd)
    run([("marker", 1.0, odd), ("marker", 2.0, "\u2029" * 3)], hdr)
    line = CastEncoder(hdr, 0.0).header_line()
    assert json.loads(line)["command"] == "x?y\u2028z\x85?\"\\\x1b"
    assert len(line.decode().splitlines()) == 1
