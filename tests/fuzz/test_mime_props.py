"""MIME parsing, BODYSTRUCTURE/ENVELOPE and sections over mutated real messages from every corpus
in ../shared/testdata (flanker, python-email, dkimpy, mox DMARC/TLS reports, Dovecot's own
BODYSTRUCTURE cases): the parser never raises, its tree is self-consistent (the invariants of
tests/message/test_robustness.py), BODYSTRUCTURE and ENVELOPE are well-formed IMAP data whose
multipart shape matches the tree, and every part a client can address is served from the right
bytes (BODY[n], BODY[n.MIME], sizes, BINARY)."""

from __future__ import annotations

import functools
import itertools
import json

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mailroom.message.imap_structure import body_structure, envelope
from mailroom.message.mime import MimePart, PartFlags, parse_message
from mailroom.message.sections import (
    BinaryError,
    SectionSpec,
    binary_section,
    binary_size,
    find_part,
    section_bytes,
    section_size,
)
from tests.conftest import TESTDATA, require_path
from tests.fuzz.fuzzing import fuzz_settings, fuzzed
from tests.reliability.support import scale

pytestmark = pytest.mark.timeout(scale(300, 7200))  # soak runs take long

MAX_SEED = 60_000


@functools.cache
def corpus() -> tuple[bytes, ...]:
    messages: list[bytes] = []
    for name, patterns in (
        ("flanker-messages", ("**/*.eml", "**/*.msg")),
        ("python-email-testdata", ("**/*",)),
        ("dkim-dkimpy", ("data/*.msg", "data/*.message", "data/*.eml", "data/test*.txt")),
        ("dmarc", ("mox-reports/*.eml",)),
    ):
        base = require_path(TESTDATA / name, f"shared test data {name}")
        for pattern in patterns:
            for path in sorted(base.glob(pattern)):
                if path.is_file() and 0 < path.stat().st_size <= MAX_SEED:
                    messages.append(path.read_bytes())
    dovecot = require_path(TESTDATA / "bodystructure-dovecot-unit", "Dovecot BODYSTRUCTURE cases")
    cases = json.loads((dovecot / "bodystructure-tests.json").read_text())
    for case in cases["parse_tests"]:
        messages.append(
            case["message"].replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8", "surrogateescape")
        )
    return tuple(messages)


SNIPPETS = [
    b"--",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b'"',
    b"(",
    b")",
    b"\\",
    b"=",
    b"\0",
    b"\xff",
    b"=?utf-8?b?",
    b"?=",
    b"boundary=",
    b"charset=",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: message/rfc822\r\n",
    b'Content-Type: multipart/alternative; boundary=""\r\n',
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Disposition: attachment; filename*=utf-8''%e2%82%ac\r\n",
    b"\r\n--x\r\n",
    b"\r\n--x--\r\n",
    b"\r\n\r\n",
    b'From: "a\\" b" <c@d>, (comment) e@f\r\n',
    b"Subject: \xe2\x82\xac\r\n",
    b"{5}\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(corpus())))
    for _ in range(draw(st.integers(0, 8))):
        if not raw:
            break
        i = draw(st.integers(0, len(raw) - 1))
        op = draw(st.integers(0, 5))
        if op == 0:
            raw[i:i] = draw(st.sampled_from(SNIPPETS))
        elif op == 1:
            del raw[i : i + draw(st.integers(1, 200))]
        elif op == 2:
            del raw[i:]
        elif op == 3:
            raw[i] = draw(st.integers(0, 255))
        elif op == 4:  # duplicate a stretch (nested boundaries, repeated headers)
            j = draw(st.integers(i, min(len(raw), i + 400)))
            raw[j:j] = raw[i:j]
        else:  # line endings: all bare LF, or all CRLF
            raw = bytearray(
                bytes(raw).replace(b"\r\n", b"\n")
                if draw(st.booleans())
                else bytes(raw).replace(b"\n", b"\r\n")
            )
    return bytes(raw)


# --- a strict reader for IMAP data (RFC 9051 §9: body, envelope) -----------------------------------


class Malformed(Exception):
    pass


def read_value(data: bytes, pos: int) -> tuple[object, int]:
    if data.startswith(b"(", pos):
        items: list[object] = []
        pos += 1
        if data.startswith(b")", pos):
            raise Malformed(f"empty list at {pos}")  # body and envelope lists are never empty
        while True:
            item, pos = read_value(data, pos)
            items.append(item)
            if data.startswith(b")", pos):
                return items, pos + 1
            if isinstance(item, list) and data.startswith(b"(", pos):
                continue  # body-type-mpart = 1*body SP media-subtype: bodies follow each other
            if not data.startswith(b" ", pos):
                raise Malformed(f"expected SP or ) at {pos}: {data[pos : pos + 20]!r}")
            pos += 1
    if data.startswith(b"NIL", pos):
        return None, pos + 3
    if data.startswith(b'"', pos):
        out = bytearray()
        pos += 1
        while True:
            if pos >= len(data):
                raise Malformed("unterminated quoted string")
            ch = data[pos]
            if ch in b"\r\n\0":
                raise Malformed(f"CR, LF or NUL in a quoted string at {pos}")
            if ch == 0x5C:
                if data[pos + 1 : pos + 2] not in (b"\\", b'"'):
                    raise Malformed(f"bad escape at {pos}")
                out.append(data[pos + 1])
                pos += 2
                continue
            if ch == 0x22:
                return bytes(out), pos + 1
            out.append(ch)
            pos += 1
    if data.startswith(b"{", pos):
        end = data.index(b"}\r\n", pos)
        size = int(data[pos + 1 : end])
        start = end + 3
        if start + size > len(data):
            raise Malformed("literal runs past the end")
        return data[start : start + size], start + size
    digits = itertools.takewhile(lambda b: 0x30 <= b <= 0x39, data[pos:])
    n = len(bytes(digits))
    if not n:
        raise Malformed(f"unexpected {data[pos : pos + 20]!r} at {pos}")
    return int(data[pos : pos + n]), pos + n


def read_whole(data: bytes) -> object:
    value, end = read_value(data, 0)
    assert end == len(data), f"trailing bytes after the value: {data[end : end + 40]!r}"
    return value


def check_shape(value: object, part: MimePart) -> None:
    """A multipart BODYSTRUCTURE starts with one list per child, then the subtype string."""
    assert isinstance(value, list)
    if part.flags & PartFlags.OVERFLOW:
        return
    if part.is_multipart:
        children = list(itertools.takewhile(lambda v: isinstance(v, list), value))
        # a multipart without parts is shown with one empty text/plain part, as Dovecot does
        assert len(children) == max(1, len(part.children)), (len(children), len(part.children))
        assert isinstance(value[len(children)], bytes)  # the subtype
        for child_value, child in zip(children, part.children, strict=False):
            check_shape(child_value, child)
    else:
        assert isinstance(value[0], bytes | type(None)) and isinstance(value[1], bytes | type(None))


def check_tree(raw: bytes, root: MimePart) -> None:
    """tests/message/test_robustness.py's invariants, with one relaxation: when the encapsulated
    message's header runs into the boundary (no blank line of its own), the message/rfc822 body
    keeps the line break that the inner message does not count. Dovecot does exactly this:
    ``--b / (blank) / A / (blank) / --b--`` gives BODY[1] 5 octets but HEADER 3 and TEXT 0."""
    n = len(raw)
    assert root.offset == 0 and root.body_end == n
    for part in root.walk():
        assert 0 <= part.offset <= part.header_end <= part.body_end <= n
        assert part.header_size <= part.header_vsize <= 2 * part.header_size
        assert part.body_size <= part.body_vsize <= 2 * part.body_size
        assert part.body_lines == raw.count(b"\n", part.body_start, part.body_end) or part.children
        prev = part.body_start
        for child in part.children:
            assert child.parent is part
            assert prev <= child.offset + 1 and child.body_end <= part.body_end
            prev = child.body_end
        if part.flags & PartFlags.MESSAGE_RFC822:
            assert len(part.children) == 1
            child = part.children[0]
            missing = part.body_size - (child.header_size + child.body_size)
            assert missing == 0 or (0 < missing <= 2 and child.body_size == 0), (part, child)
        if part.flags & PartFlags.MULTIPART:
            assert sum(c.header_size + c.body_size for c in part.children) <= part.body_size


def check_message(raw: bytes) -> None:
    root = parse_message(raw)
    check_tree(raw, root)
    for extended in (True, False):
        check_shape(read_whole(body_structure(root, extended)), root)
    env = read_whole(envelope(root))
    assert isinstance(env, list) and len(env) == 10, env
    for part in root.walk():
        if part.is_message_rfc822 and part.children:
            read_whole(envelope(part.children[0]))
            check_shape(read_whole(body_structure(part.children[0])), part.children[0])
    # every part a client can name, and some it cannot
    for depth in (1, 2, 3):
        for numbers in itertools.product(range(1, 4), repeat=depth):
            found = find_part(root, numbers)
            spec = SectionSpec(numbers)
            data = section_bytes(raw, root, spec)
            if found is None:
                assert data is None and binary_section(raw, root, numbers) is None
                continue
            assert data is not None and section_size(raw, root, spec) == len(data)
            mime = section_bytes(raw, root, SectionSpec(numbers, "MIME"))
            assert mime == raw[found.offset : found.header_end]
            if not found.is_multipart:
                assert data == raw[found.body_start : found.body_end]
            decoded = binary_section(raw, root, numbers)
            size = binary_size(raw, root, numbers)
            assert isinstance(decoded, BinaryError) == isinstance(size, BinaryError)
            if isinstance(decoded, bytes):
                assert size == len(decoded)
    for text in ("HEADER", "TEXT"):
        spec = SectionSpec((), text)
        data = section_bytes(raw, root, spec)
        assert data is not None and section_size(raw, root, spec) == len(data)
    fields = SectionSpec((), "HEADER.FIELDS", (b"From", b"Subject", b"Content-Type"))
    chosen = section_bytes(raw, root, fields)
    assert chosen is not None and section_size(raw, root, fields) == len(chosen)


def test_every_corpus_message_unmutated() -> None:
    for raw in corpus():
        check_message(raw)
    fuzzed_count = len(corpus())
    assert fuzzed_count > 100
    for _ in range(fuzzed_count):
        fuzzed("mime")


# found by a soak run: an encapsulated message whose header runs into the next boundary
DIGEST_CORNER = b"Content-Type: multipart/digest; boundary=XYZ\r\n\r\n--XYZ\r\n\r\nA\r\n\r\n--XYZ--\r\n"


@fuzz_settings(300)
@example(DIGEST_CORNER)
@given(mutated())
def test_mutated_real_messages(raw: bytes) -> None:
    fuzzed("mime")
    check_message(raw)


@fuzz_settings(200)
@given(st.lists(st.one_of(st.sampled_from(SNIPPETS), st.binary(max_size=16)), max_size=60))
def test_snippet_soup(pieces: list[bytes]) -> None:
    fuzzed("mime")
    check_message(b"".join(pieces))
