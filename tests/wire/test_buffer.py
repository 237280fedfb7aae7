import pytest

from mailroom.wire.buffer import ReceiveBuffer
from mailroom.wire.errors import LineTooLongError


def test_lines_split_at_every_offset() -> None:
    data = b"EHLO a\r\nMAIL FROM:<x@y>\r\nbare\nRCPT TO:<z@w>\r\n"
    want = [b"EHLO a\r\n", b"MAIL FROM:<x@y>\r\n", b"bare\n", b"RCPT TO:<z@w>\r\n"]
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            buf = ReceiveBuffer()
            got: list[bytes] = []
            for piece in (data[:i], data[i:j], data[j:]):
                buf.feed(piece)
                while (line := buf.next_line()) is not None:
                    got.append(line)
            assert got == want, (i, j)
            assert len(buf) == 0


def test_byte_by_byte() -> None:
    buf = ReceiveBuffer()
    got = []
    for b in b"a\r\nbb\r\n":
        buf.feed(bytes([b]))
        while (line := buf.next_line()) is not None:
            got.append(line)
    assert got == [b"a\r\n", b"bb\r\n"]


def test_overlong_line_raises_once_and_resyncs() -> None:
    buf = ReceiveBuffer(max_line=10)
    buf.feed(b"x" * 25)
    with pytest.raises(LineTooLongError):
        buf.next_line()
    buf.feed(b"y" * 30)
    assert buf.next_line() is None
    buf.feed(b"zz\r\nNOOP\r\n")
    assert buf.next_line() == b"NOOP\r\n"
    assert buf.next_line() is None


def test_overlong_complete_line() -> None:
    buf = ReceiveBuffer(max_line=10)
    buf.feed(b"0123456789ABCDEF\r\nok\r\n")
    with pytest.raises(LineTooLongError):
        buf.next_line()
    assert buf.next_line() == b"ok\r\n"


def test_exactly_max_line_is_accepted() -> None:
    buf = ReceiveBuffer(max_line=6)
    buf.feed(b"abcd\r\n")
    assert buf.next_line() == b"abcd\r\n"


def test_take_and_clear() -> None:
    buf = ReceiveBuffer()
    buf.feed(b"hello world")
    assert buf.take(5) == b"hello"
    assert buf.take(100) == b" world"
    assert buf.take(1) == b""
    buf.feed(b"QUIT\r\n")
    buf.clear()
    assert buf.next_line() is None
    assert len(buf) == 0
