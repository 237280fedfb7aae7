"""DATA and BDAT streaming: dot-unstuffing, the end marker, size limits, bare LF/CR (smuggling)."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_dialog import config, feed_pieces

from mailroom.wire.smtp.events import (
    BodyAborted,
    BodyChunk,
    BodyEnd,
    ConnectionClosed,
    DataStart,
    Event,
    ProtocolViolation,
)

ENVELOPE = b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"
ENVELOPE_REPLIES = b"250 mx.example\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
AFTER = b"NOOP\r\n"  # pipelined after the body: proves the engine stays in sync
START = b"354 End data with <CR><LF>.<CR><LF>\r\n"


def reference_data(wire: bytes) -> tuple[bytes, str | None, bytes] | None:
    """A non-streaming model of RFC 5321 §4.5.2: (content, first bare char, rest) or None if unended."""
    s = b"\r\n" + wire  # the CRLF of the DATA command starts the first line
    idx = s.find(b"\r\n.\r\n")
    if idx < 0:
        return None
    raw = s[2 : idx + 2]
    rest = s[idx + 5 :]
    lines = raw.split(b"\r\n")
    content = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    bare = re.search(rb"\r(?!\n)|(?<!\r)\n", raw)
    kind = None if bare is None else ("LF" if bare.group() == b"\n" else "CR")
    return content, kind, rest


def body_of(events: list[Event]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, BodyChunk))


def run_data(wire: bytes, splits: list[int] | None = None, **cfg: object) -> tuple[list[Event], bytes]:
    data = ENVELOPE + b"DATA\r\n" + wire
    cuts = sorted({0, len(data), *(len(ENVELOPE) + 6 + s for s in (splits or []))})
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
    return feed_pieces(pieces, config(**cfg))


CASES = [
    b".\r\n",
    b"a\r\n.\r\n",
    b"..\r\n.\r\n",
    b"...\r\n.\r\n",
    b".a\r\n..b\r\nc.\r\n.\r\n",
    b"line\r\n.\r\nNOOP\r\n",
    b"x\r\n..\r\n\r\n.\r\n",
    b"\r\n\r\n.\r\n",
    b"trailing dot.\r\n.\r\n",
]


@pytest.mark.parametrize("wire", CASES)
def test_data_split_at_every_offset_matches_reference(wire: bytes) -> None:
    ref = reference_data(wire)
    assert ref is not None
    content, bare, rest = ref
    whole_events, whole_out = run_data(wire + AFTER)
    assert body_of(whole_events) == content
    assert bare is None
    assert BodyEnd() in whole_events
    assert whole_out.startswith(ENVELOPE_REPLIES + START + b"250 2.0.0 Ok: queued\r\n")
    assert whole_out.endswith(b"250 2.0.0 Ok\r\n" * (1 + rest.count(b"NOOP")))
    for i in range(len(wire) + len(AFTER) + 1):
        assert run_data(wire + AFTER, [i]) == (whole_events, whole_out), i
    for i in range(0, len(wire), 3):
        for j in range(i, len(wire) + 1, 2):
            assert run_data(wire + AFTER, [i, j]) == (whole_events, whole_out), (i, j)
    assert run_data(wire + AFTER, list(range(len(wire) + len(AFTER)))) == (whole_events, whole_out)


SMUGGLING = [
    # (wire, bare kind): none of these may end the body early.
    (b"a\n.\nMAIL FROM:<evil@x>\r\n.\r\n", "LF"),
    (b"a\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n", "LF"),
    (b"a\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n", "LF"),
    (b"a\r.\rMAIL FROM:<evil@x>\r\n.\r\n", "CR"),
    (b"a\r\n.\rMAIL FROM:<evil@x>\r\n.\r\n", "CR"),
    (b"a\r\n.\r\r\nMAIL FROM:<evil@x>\r\n.\r\n", "CR"),
    (b".\nNOOP\r\n.\r\n", "LF"),
]


@pytest.mark.parametrize(("wire", "bare"), SMUGGLING)
def test_smuggling_attempts_never_end_data_and_are_rejected(wire: bytes, bare: str) -> None:
    ref = reference_data(wire)
    assert ref is not None and ref[1] == bare and ref[2] == b""
    for i in range(len(wire) + 1):
        events, out = run_data(wire + AFTER, [i])
        assert not any(isinstance(e, ProtocolViolation) for e in events), i  # nothing ran as a command
        aborted = [e for e in events if isinstance(e, BodyAborted)]
        assert len(aborted) == 1 and aborted[0].reason == f"bare {bare} in DATA"
        assert not any(isinstance(e, BodyEnd) for e in events)
        assert (
            out
            == ENVELOPE_REPLIES
            + START
            + (b"550 5.5.2 Message contains a bare %s; lines must end with CRLF\r\n" % bare.encode())
            + b"250 2.0.0 Ok\r\n"
        )


@pytest.mark.parametrize(("wire", "bare"), SMUGGLING)
def test_bare_line_breaks_pass_through_when_allowed(wire: bytes, bare: str) -> None:
    ref = reference_data(wire)
    assert ref is not None
    events, out = run_data(wire + AFTER, forbid_bare_lf=False)
    assert body_of(events) == ref[0]
    assert BodyEnd() in events
    assert out.endswith(b"250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n")


def test_data_size_limit_counts_unstuffed_octets_and_resyncs() -> None:
    # 5 octets of content ("..ab\r\n" unstuffs to ".ab\r\n").
    events, out = run_data(b"..ab\r\n.\r\n" + AFTER, max_message_size=5)
    assert body_of(events) == b".ab\r\n"
    # 6 octets: emission stops exactly at the limit, wherever the input was split.
    events, out = run_data(b"..abc\r\n.\r\n" + AFTER, max_message_size=5)
    assert body_of(events) == b".abc\r"
    for i in range(12):
        assert run_data(b"..abc\r\n.\r\n" + AFTER, [i], max_message_size=5) == (events, out)
    assert [type(e) for e in events if isinstance(e, (DataStart, BodyAborted, BodyEnd))] == [
        DataStart,
        BodyAborted,
    ]
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n")


def test_size_exceeded_stops_chunks_but_keeps_reading() -> None:
    wire = b"".join(b"%05d\r\n" % i for i in range(2000)) + b".\r\n" + AFTER
    pieces = [wire[i : i + 1000] for i in range(0, len(wire), 1000)]
    data = ENVELOPE + b"DATA\r\n"
    events, out = feed_pieces([data, *pieces], config(max_message_size=4000))
    assert sum(len(e.data) for e in events if isinstance(e, BodyChunk)) == 4000
    assert out.endswith(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 2.0.0 Ok\r\n")
    assert isinstance(events[-1], ConnectionClosed)


def test_body_is_streamed_not_buffered() -> None:
    sess_events, _ = feed_pieces([ENVELOPE + b"DATA\r\n", b"a" * 1000, b"b" * 1000], config())
    chunks = [e for e in sess_events if isinstance(e, BodyChunk)]
    assert chunks == [BodyChunk(b"a" * 1000 + b"b" * 1000)]  # merged by normalize(); see below
    from smtp_dialog import new_session

    sess = new_session(config())
    sess.engine.receive_data(ENVELOPE + b"DATA\r\n")
    sess.pump()
    sess.engine.receive_data(b"a" * 1000)
    assert sess.pump() == [BodyChunk(b"a" * 1000)]  # emitted before the end marker arrives


@settings(max_examples=300, deadline=None)
@given(
    body=st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".\r\n", b"\r\n."]), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=4),
    forbid=st.booleans(),
)
def test_data_matches_reference_model(body: list[bytes], cuts: list[int], forbid: bool) -> None:
    wire = b"".join(body) + b"\r\n.\r\n" + AFTER
    ref = reference_data(wire)
    assert ref is not None
    content, bare, rest = ref
    events, out = run_data(wire, cuts, forbid_bare_lf=forbid)
    assert body_of(events) == content
    if bare and forbid:
        assert any(isinstance(e, BodyAborted) for e in events)
    else:
        assert BodyEnd() in events
    # Whatever followed the end marker was processed as commands.
    assert out.count(b"250 2.0.0 Ok\r\n") == rest.count(b"NOOP\r\n")


# --- BDAT ------------------------------------------------------------------------------------------------


def run_bdat(chunks: list[tuple[bytes, bool]], splits: list[int] | None = None, **cfg: object):  # type: ignore[no-untyped-def]
    data = ENVELOPE.replace(b"HELO", b"EHLO") + b"".join(
        b"BDAT %d%s\r\n%s" % (len(c), b" LAST" if last else b"", c) for c, last in chunks
    )
    data += AFTER
    cuts = sorted({0, len(data), *(s for s in (splits or []) if s <= len(data))})
    pieces = [data[a:b] for a, b in itertools.pairwise(cuts)]
    return feed_pieces(pieces, config(**cfg)), data


def test_bdat_split_at_every_offset() -> None:
    chunks = [(b"Subject: x\r\n\r\n.\r\n", False), (b"", False), (b"\x00\xff\nbin\r.", False), (b"end", True)]
    (whole_events, whole_out), data = run_bdat(chunks)
    assert body_of(whole_events) == b"".join(c for c, _ in chunks)
    assert BodyEnd() in whole_events
    assert whole_out.endswith(
        b"250 2.0.0 17 octets received\r\n250 2.0.0 0 octets received\r\n"
        b"250 2.0.0 8 octets received\r\n250 2.0.0 Ok: queued\r\n250 2.0.0 Ok\r\n"
    )
    for i in range(len(data) + 1):
        assert run_bdat(chunks, [i])[0] == (whole_events, whole_out), i
    assert run_bdat(chunks, list(range(len(data))))[0] == (whole_events, whole_out)


def test_bdat_size_limit_split_everywhere() -> None:
    chunks = [(b"12345", False), (b"67890", False), (b"abc", True)]
    (whole_events, whole_out), data = run_bdat(chunks, max_message_size=8)
    assert whole_out.endswith(
        b"250 2.0.0 5 octets received\r\n"
        b"552 5.3.4 Message size exceeds fixed maximum message size\r\n"
        b"503 5.5.1 Need MAIL command first\r\n250 2.0.0 Ok\r\n"
    )
    for i in range(len(data) + 1):
        assert run_bdat(chunks, [i], max_message_size=8)[0] == (whole_events, whole_out), i


def test_bdat_does_not_check_bare_lf() -> None:
    (events, _out), _ = run_bdat([(b"a\nb\rc", True)])
    assert body_of(events) == b"a\nb\rc"
    assert BodyEnd() in events
