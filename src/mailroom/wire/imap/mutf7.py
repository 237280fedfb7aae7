"""Modified UTF-7 mailbox names, RFC 3501 §5.1.3 (kept by RFC 9051 Appendix A for IMAP4rev1 clients).

Printable US-ASCII (0x20-0x7E) stands for itself except "&", written "&-". Everything else is
UTF-16BE in modified BASE64 ("," instead of "/", no padding) between "&" and "-".

:func:`decode` is strict (as Dovecot's and mox's decoders are): it rejects any byte outside 0x20-0x7E,
a base64 run that does not end in "-", non-zero padding bits, an odd number of UTF-16 octets, unpaired
surrogates, printable ASCII hidden in base64, and two adjacent base64 runs ("null shifts").
"""

from __future__ import annotations

import base64
import binascii
import re

__all__ = ["MUTF7Error", "decode", "encode"]


class MUTF7Error(ValueError):
    """The input is not canonical modified UTF-7."""


# modified BASE64 alphabet: RFC 2152 base64 with "," for "/"
_B64_RUN = re.compile(rb"&([A-Za-z0-9+,]*)-")
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")  # RFC 3501 §5.1.3: names are printable US-ASCII


def _is_direct(ch: str) -> bool:
    return 0x20 <= ord(ch) <= 0x7E


def encode(name: str) -> str:
    """Encode a Unicode mailbox name to modified UTF-7 (always succeeds)."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            utf16 = "".join(run).encode("utf-16-be", "surrogatepass")
            b64 = base64.b64encode(utf16).rstrip(b"=").replace(b"/", b",").decode("ascii")
            out.append("&" + b64 + "-")
            run.clear()

    for ch in name:
        if _is_direct(ch):
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return "".join(out)


def decode(data: str | bytes) -> str:
    """Decode a modified UTF-7 mailbox name; raise :class:`MUTF7Error` on anything non-canonical."""
    raw = data.encode("latin-1") if isinstance(data, str) else bytes(data)
    if not _PRINTABLE.fullmatch(raw):
        raise MUTF7Error("mailbox name has a byte outside printable US-ASCII")
    if b"&" not in raw:  # the common case: nothing encoded
        return raw.decode("ascii")
    out: list[str] = []
    pos = 0
    last_run_end = -1
    while pos < len(raw):
        amp = raw.find(b"&", pos)
        if amp < 0:
            out.append(raw[pos:].decode("ascii"))
            break
        out.append(raw[pos:amp].decode("ascii"))
        m = _B64_RUN.match(raw, amp)
        if m is None:
            raise MUTF7Error("unterminated or invalid base64 run")
        b64 = m.group(1)
        if not b64:
            out.append("&")  # "&-" is "&"
        else:
            if last_run_end == amp:
                raise MUTF7Error("two adjacent base64 runs (null shift)")
            out.append(_decode_run(b64))
            last_run_end = m.end()
        pos = m.end()
    return "".join(out)


def _decode_run(b64: bytes) -> str:
    if len(b64) % 4 == 1:
        raise MUTF7Error("truncated base64 run")
    std = b64.replace(b",", b"/")
    padded = std + b"=" * (-len(std) % 4)
    try:
        utf16 = base64.b64decode(padded, validate=True)
    except binascii.Error as exc:  # pragma: no cover - the regex admits only the alphabet
        raise MUTF7Error("invalid base64") from exc
    # non-zero padding bits: the canonical encoding of the octets must give back the same text
    if base64.b64encode(utf16).rstrip(b"=") != std:
        raise MUTF7Error("non-zero padding bits in base64 run")
    if len(utf16) % 2:
        raise MUTF7Error("odd number of UTF-16 octets")
    try:
        text = utf16.decode("utf-16-be")  # strict: unpaired surrogates raise
    except UnicodeDecodeError as exc:
        raise MUTF7Error("invalid UTF-16 in base64 run") from exc
    if any(_is_direct(ch) for ch in text):
        raise MUTF7Error("printable US-ASCII must not be base64-encoded")
    return text
