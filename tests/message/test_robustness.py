"""Properties over real-world corpora and random input: the parser never raises and its offsets
and sizes are always self-consistent."""

from __future__ import annotations

import random
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailroom.message.imap_structure import body_structure, envelope
from mailroom.message.mime import MimePart, PartFlags, parse_message
from mailroom.message.sections import SectionSpec, binary_section, find_part, section_bytes, section_chunks
from tests.message.helpers import shared_testdata


def _check_tree(raw: bytes, root: MimePart) -> None:
    n = len(raw)
    assert root.offset == 0
    assert root.body_end == n  # the root covers the whole message
    for part in root.walk():
        assert 0 <= part.offset <= part.header_end <= part.body_end <= n
        assert part.header_size <= part.header_vsize <= 2 * part.header_size
        assert part.body_size <= part.body_vsize <= 2 * part.body_size
        assert part.body_lines == raw.count(b"\n", part.body_start, part.body_end) or part.children
        if part.children:
            # children sit inside the parent's body, in order, without overlapping
            prev = part.body_start
            for child in part.children:
                assert child.parent is part
                assert prev <= child.offset + 1  # a child may start on the line break Dovecot moved
                assert child.body_end <= part.body_end
                prev = child.body_end
        if part.flags & PartFlags.MESSAGE_RFC822:
            assert len(part.children) == 1
            child = part.children[0]
            # the encapsulated message is the whole body: its sizes add up to the body's
            assert child.header_size + child.body_size == part.body_size
            assert child.header_vsize + child.body_vsize == part.body_vsize
            assert child.header_lines + child.body_lines == part.body_lines
        if part.flags & PartFlags.MULTIPART:
            inner = sum(c.header_size + c.body_size for c in part.children)
            assert inner <= part.body_size  # the rest is preamble, boundaries and epilogue
    body_structure(root, True)
    body_structure(root, False)
    envelope(root)


def _corpus() -> list[Path]:
    files: list[Path] = []
    for name in ("flanker-messages", "python-email-testdata"):
        base = shared_testdata(name)
        files += [p for p in sorted(base.rglob("*")) if p.is_file()]
    return files


def test_corpus_parses_consistently() -> None:
    files = _corpus()
    assert len(files) > 80
    for path in files:
        raw = path.read_bytes()
        root = parse_message(raw)
        _check_tree(raw, root)
        for spec in (SectionSpec(), SectionSpec(text="HEADER"), SectionSpec(text="TEXT")):
            chunks = section_chunks(raw, root, spec)
            assert chunks is not None
            assert all(0 <= c[0] <= c[1] <= len(raw) for c in chunks if isinstance(c, tuple))
        binary_section(raw, root, ())


def test_memoryview_and_bytes_agree() -> None:
    raw = (shared_testdata("flanker-messages") / "torture.eml").read_bytes()
    a, b = parse_message(raw), parse_message(memoryview(raw))
    assert body_structure(a) == body_structure(b)
    # a read(offset, n) callable serves sections as well as the bytes do
    part = find_part(a, (2,))
    assert part is not None
    spec = SectionSpec(part=(2,))
    assert section_bytes(lambda off, n: raw[off : off + n], a, spec) == section_bytes(raw, a, spec)


_SNIPPETS = [
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
    b"<",
    b">",
    b"@",
    b",",
    b"=",
    b"*",
    b"\0",
    b"\xff",
    b"Content-Type: multipart/mixed; boundary=x\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"\r\n--x\r\n",
    b"\r\n--x--\r\n",
    b"MIME-Version: 1.0\r\n",
    b"\r\n\r\n",
    b"From: g: a@b, (c) <d@e>;\r\n",
    b"Content-Type: multipart/digest; boundary=x\r\n",
    b"Content-Type: text/plain; a*0*=x; a*1=y\r\n",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_SNIPPETS), st.binary(max_size=12)), max_size=40))
def test_random_messages_never_raise(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    _check_tree(raw, parse_message(raw))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(raw: bytes) -> None:
    _check_tree(raw, parse_message(raw))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_messages_never_raise(data: st.DataObject) -> None:
    files = [p for p in _corpus() if p.stat().st_size < 50_000]
    raw = bytearray(data.draw(st.sampled_from(files)).read_bytes())
    for _ in range(data.draw(st.integers(1, 6))):
        if not raw:
            break
        i = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.integers(0, 3))
        if op == 0:
            raw[i:i] = data.draw(st.sampled_from(_SNIPPETS))
        elif op == 1:
            del raw[i : i + data.draw(st.integers(1, 50))]
        elif op == 2:
            del raw[i:]
        else:
            raw[i] = data.draw(st.integers(0, 255))
    _check_tree(bytes(raw), parse_message(bytes(raw)))


def test_deep_nesting_is_capped() -> None:
    depth = 500
    raw = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%04d\r\n\r\n--b%04d\r\n" % (i, i) for i in range(depth)
    )
    raw += b"\r\nleaf\r\n"
    root = parse_message(raw)
    deepest = max(p.depth for p in root.walk())
    assert deepest == 99  # Dovecot's limit: 100 nesting levels
    opaque = [p for p in root.walk() if p.flags & PartFlags.OVERFLOW]
    assert len(opaque) == 1 and b'"application" "octet-stream"' in body_structure(root)
    _check_tree(raw, root)


def test_large_message_is_linear() -> None:
    rnd = random.Random(1)
    line = (
        b"".join(bytes([rnd.choice(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/")]) for _ in range(76))
        + b"\r\n"
    )
    body = line * 200_000  # ~15 MB of base64-looking text, plus boundary-like noise
    raw = (
        b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + body
        + b"--not-a-boundary\r\n" * 1000
        + b"\r\n--zz--\r\n"
    )
    start = time.perf_counter()
    root = parse_message(raw)
    elapsed = time.perf_counter() - start
    assert root.children[0].body_size == len(body) + len(b"--not-a-boundary\r\n") * 1000
    assert elapsed < 5, elapsed
