"""RFC 5322 / RFC 2045 lexical parsing the way Dovecot's lib-mail does it.

IMAP clients compare what different servers say about the same message, so the quirks matter as much
as the grammar: this module follows Dovecot 2.3's rfc822-parser.c, rfc2231-parser.c and
message-address.c (LGPL-2.1; behaviour re-implemented, not copied) closely enough that BODYSTRUCTURE
and ENVELOPE come out byte-identical. Everything works on ``bytes`` and never raises on bad input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# RFC 5322 §3.2.3 atext, plus 8-bit octets (Dovecot accepts them as atext). Dovecot's table marks
# "/", "=" and "?" as atext that are MIME tspecials (RFC 2045 §5.1).
_ATEXT = bytearray(256)
for _c in b"!#$%&'*+-/=?^_`{|}~":
    _ATEXT[_c] = 1
for _c in range(ord("0"), ord("9") + 1):
    _ATEXT[_c] = 1
for _c in range(ord("A"), ord("Z") + 1):
    _ATEXT[_c] = 1
for _c in range(ord("a"), ord("z") + 1):
    _ATEXT[_c] = 1
for _c in range(0x80, 0x100):
    _ATEXT[_c] = 1
ATEXT = bytes(_ATEXT)
# RFC 2045 §5.1 token: atext minus tspecials ("/", "=", "?"), plus "." (Dovecot allows it).
_TOKEN = bytearray(_ATEXT)
for _c in b"/=?":
    _TOKEN[_c] = 0
_TOKEN[ord(".")] = 1
TOKEN_CHARS = bytes(_TOKEN)

_LWSP = b" \t\r\n"
# Dovecot replaces NULs inside parsed address strings with U+FFFD (RFC822_NUL_REPLACEMENT_STR).
NUL_REPLACEMENT = "\ufffd".encode()


class Rfc822Parser:
    """A cursor over one header value (Dovecot's struct rfc822_parser_context).

    Return conventions follow Dovecot: ``-1`` broken input, ``0`` end of data reached, ``1`` more
    data follows.
    """

    __slots__ = ("data", "end", "last_comment", "nul_replacement", "pos")

    def __init__(self, data: bytes, *, keep_comment: bool = False, nul_replacement: bool = False) -> None:
        self.data = data
        self.pos = 0
        self.end = len(data)
        self.last_comment: bytearray | None = bytearray() if keep_comment else None
        self.nul_replacement = nul_replacement

    def peek(self) -> int:
        """The current octet, or -1 at the end (Dovecot reads the NUL terminator there)."""
        return self.data[self.pos] if self.pos < self.end else -1

    def _append(self, out: bytearray, start: int, stop: int) -> None:
        chunk = self.data[start:stop]
        if self.nul_replacement and b"\0" in chunk:
            chunk = chunk.replace(b"\0", NUL_REPLACEMENT)
        out += chunk

    # RFC 5322 §3.2.2 comment; nested, quoted-pair aware.
    def skip_comment(self) -> int:
        level = 1
        if self.last_comment is not None:
            del self.last_comment[:]
        self.pos += 1
        start = self.pos
        data = self.data
        while self.pos < self.end:
            c = data[self.pos]
            if c == 0x28:  # (
                level += 1
            elif c == 0x29:  # )
                level -= 1
                if level == 0:
                    if self.last_comment is not None:
                        self._append(self.last_comment, start, self.pos)
                    self.pos += 1
                    return 1 if self.pos < self.end else 0
            elif c == 0x0A:
                # folding whitespace inside the comment: the (CR)LF is dropped
                if self.last_comment is not None:
                    stop = self.pos
                    if stop > start and data[stop - 1] == 0x0D:
                        stop -= 1
                    self._append(self.last_comment, start, stop)
                    start = self.pos + 1
            elif c == 0x5C:  # backslash
                if self.last_comment is not None:
                    self._append(self.last_comment, start, self.pos)
                start = self.pos + 1
                self.pos += 1
                if self.pos >= self.end:
                    return -1
            self.pos += 1
        return -1  # missing ")"

    # RFC 5322 §3.2.2 CFWS (Dovecot also skips bare CR/LF).
    def skip_lwsp(self) -> int:
        data = self.data
        while self.pos < self.end:
            c = data[self.pos]
            if c in _LWSP:
                self.pos += 1
                continue
            if c != 0x28:
                break
            if self.skip_comment() < 0:
                return -1
        return 1 if self.pos < self.end else 0

    def parse_atom(self, out: bytearray) -> int:
        # RFC 5322 §3.2.3 atom = [CFWS] 1*atext [CFWS]
        if self.pos >= self.end or not ATEXT[self.data[self.pos]]:
            return -1
        start = self.pos
        self.pos += 1
        while self.pos < self.end and ATEXT[self.data[self.pos]]:
            self.pos += 1
        self._append(out, start, self.pos)
        if self.pos >= self.end:
            return 0
        return self.skip_lwsp()

    def parse_dot_atom(self, out: bytearray) -> int:
        # RFC 5322 §3.2.3 dot-atom; RFC 822 compatibility: LWSP allowed around "."
        if self.pos >= self.end or not ATEXT[self.data[self.pos]]:
            return -1
        start = self.pos
        self.pos += 1
        while self.pos < self.end:
            if ATEXT[self.data[self.pos]]:
                self.pos += 1
                continue
            self._append(out, start, self.pos)
            ret = self.skip_lwsp()
            if ret <= 0:
                return ret
            if self.data[self.pos] != 0x2E:
                return 1
            self.pos += 1
            out += b"."
            if self.skip_lwsp() <= 0:
                return -1  # "." must be followed by another atom
            start = self.pos
        self._append(out, start, self.pos)
        return 0

    def parse_mime_token(self, out: bytearray) -> int:
        # RFC 2045 §5.1 token (may be empty: Dovecot does not reject that here)
        start = self.pos
        while self.pos < self.end and TOKEN_CHARS[self.data[self.pos]]:
            self.pos += 1
        self._append(out, start, self.pos)
        if self.pos >= self.end:
            return 0
        return self.skip_lwsp()

    def parse_quoted_string(self, out: bytearray) -> int:
        # RFC 5322 §3.2.4 quoted-string; folding (CR)LF is removed, quoted-pairs unescaped.
        self.pos += 1
        start = self.pos
        data = self.data
        while self.pos < self.end:
            c = data[self.pos]
            if c == 0x22:
                self._append(out, start, self.pos)
                self.pos += 1
                return self.skip_lwsp()
            if c == 0x0A:
                stop = self.pos
                if stop > start and data[stop - 1] == 0x0D:
                    stop -= 1
                self._append(out, start, stop)
                start = self.pos + 1
            elif c == 0x5C:
                self.pos += 1
                if self.pos >= self.end:
                    return -1
                self._append(out, start, self.pos - 1)
                start = self.pos
            self.pos += 1
        return -1  # missing closing quote

    def _parse_atom_or_dot(self, out: bytearray) -> int:
        start = self.pos
        while self.pos < self.end and (ATEXT[self.data[self.pos]] or self.data[self.pos] == 0x2E):
            self.pos += 1
        self._append(out, start, self.pos)
        if self.pos >= self.end:
            return 0
        return self.skip_lwsp()

    def parse_phrase(self, out: bytearray) -> int:
        # RFC 5322 §3.2.5 phrase = 1*word / obs-phrase (RFC 5322 §4.1: "." allowed)
        if self.pos >= self.end:
            return 0
        if self.data[self.pos] == 0x2E:
            return -1
        while True:
            quoted = self.data[self.pos] == 0x22
            ret = self.parse_quoted_string(out) if quoted else self._parse_atom_or_dot(out)
            if ret <= 0:
                return ret
            c = self.data[self.pos]
            if not ATEXT[c] and c != 0x22 and c != 0x2E:
                break
            out += b" "
        return self.skip_lwsp()

    def _parse_domain_literal(self, out: bytearray) -> int:
        # RFC 5322 §3.4.1 domain-literal, kept with its brackets
        start = self.pos
        while self.pos < self.end:
            c = self.data[self.pos]
            if c == 0x5C:
                self.pos += 1
                if self.pos >= self.end:
                    break
            elif c == 0x5D:
                self.pos += 1
                self._append(out, start, self.pos)
                return self.skip_lwsp()
            self.pos += 1
        return -1

    def parse_domain(self, out: bytearray) -> int:
        # RFC 5322 §3.4.1 domain = dot-atom / domain-literal / obs-domain; cursor is on "@"
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1
        if self.data[self.pos] == 0x5B:
            return self._parse_domain_literal(out)
        return self.parse_dot_atom(out)

    def parse_content_type(self, out: bytearray) -> int:
        """RFC 2045 §5.1 type "/" subtype. Like Dovecot 2.3, a malformed value leaves ``out`` empty
        (both tokens must be non-empty, and the subtype must be followed by ";" or the end), except
        that a lone type at the end of the value is kept."""
        if self.skip_lwsp() <= 0:
            return -1
        start = len(out)
        if self.parse_mime_token(out) <= 0 or len(out) == start:
            return -1
        if self.data[self.pos] != 0x2F:
            del out[start:]
            return -1
        self.pos += 1
        if self.skip_lwsp() <= 0:
            del out[start:]
            return -1
        out += b"/"
        sub = len(out)
        ret = self.parse_mime_token(out)
        if ret < 0 or len(out) == sub or (self.pos < self.end and self.data[self.pos] != 0x3B):
            del out[start:]
            return -1
        return ret

    def parse_content_param(self) -> tuple[int, bytes, bytes]:
        # RFC 2045 §5.1: *(";" parameter), parameter := attribute "=" value
        if self.pos >= self.end:
            return 0, b"", b""
        if self.data[self.pos] != 0x3B:
            return -1, b"", b""
        self.pos += 1
        if self.skip_lwsp() <= 0:
            return -1, b"", b""
        key = bytearray()
        if self.parse_mime_token(key) <= 0:
            return -1, b"", b""
        if self.data[self.pos] != 0x3D:
            return -1, b"", b""
        self.pos += 1
        value = bytearray()
        ret = self.skip_lwsp()
        if ret <= 0:
            pass  # broken / no value
        elif self.data[self.pos] == 0x22:
            ret = self.parse_quoted_string(value)
        elif self.data[self.pos] == 0x3D:
            # Dovecot's workaround for broken input: name==?utf-8?b?...?=
            start = self.pos
            while self.pos < self.end and self.data[self.pos] not in b"; \t\r\n":
                self.pos += 1
            value += self.data[start : self.pos]
        else:
            ret = self.parse_mime_token(value)
        return (-1 if ret < 0 else 1), bytes(key), bytes(value)


def cstr(value: bytes) -> bytes:
    """Dovecot keeps header-derived values as C strings: everything after a NUL is lost."""
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def parse_params(parser: Rfc822Parser) -> list[tuple[bytes, bytes]]:
    """Content-Type / Content-Disposition parameters with RFC 2231 §3-4 continuations merged.

    Like Dovecot: broken parameters are skipped octet by octet; "key*0", "key*1"... (sorted by
    index) are joined; if any piece is extended ("key*0*") the result is named "key*" and keeps the
    charset'language'%XX form, non-extended pieces getting their "%" escaped; an index gap
    leaves the pieces unmerged. Values are not decoded: IMAP reports them as they were sent.
    """
    result: list[tuple[bytes, bytes]] = []
    pieces: list[tuple[bytes, int, bool, bytes]] = []  # key, idx, extended, value
    while True:
        ret, key, value = parser.parse_content_param()
        if ret == 0:
            break
        if ret < 0:
            if parser.pos >= parser.end:
                break
            parser.pos += 1
            continue
        key, value = cstr(key), cstr(value)
        star = key.find(b"*")
        if star >= 0:
            p = star
            idx = 0
            if p + 1 < len(key):
                p += 1
                while p < len(key) and 0x30 <= key[p] <= 0x39:
                    idx = idx * 10 + key[p] - 0x30
                    p += 1
            extended = p < len(key) and key[p] == 0x2A
            if extended:
                p += 1
            if p >= len(key):
                pieces.append((key[:star], idx, extended, value))
                continue
        result.append((key, value))
    if not pieces:
        return result
    pieces.sort(key=lambda t: (t[0], t[1]))
    i = 0
    while i < len(pieces):
        j = i
        ok = True
        have_extended = False
        next_idx = 0
        while j < len(pieces) and pieces[j][0].lower() == pieces[i][0].lower():
            if pieces[j][1] != next_idx:
                ok = False
            if pieces[j][2]:
                have_extended = True
            next_idx += 1
            j += 1
        if not ok:
            for k in range(i, j):
                pkey, pidx, pext, pval = pieces[k]
                result.append((pkey + b"*%d" % pidx + (b"*" if pext else b""), pval))
        else:
            merged = bytearray()
            if not pieces[i][2] and have_extended:
                merged += b"''"
            for k in range(i, j):
                if not pieces[k][2] and have_extended:
                    merged += pieces[k][3].replace(b"%", b"%25")
                else:
                    merged += pieces[k][3]
            result.append((pieces[i][0] + (b"*" if have_extended else b""), bytes(merged)))
        i = j
    return result


# ---------------------------------------------------------------------------------------------
# RFC 5322 §3.4 addresses (Dovecot message-address.c with FILL_MISSING, as IMAP ENVELOPE uses it)


@dataclass
class Address:
    """One ENVELOPE address structure (RFC 3501 §7.4.2 / RFC 9051 §7.5.2).

    A group start is (None, None, group-name, None) and a group end is all None, per RFC 3501 §7.4.2.
    """

    name: bytes | None = None
    route: bytes | None = None
    mailbox: bytes | None = None
    domain: bytes | None = None
    invalid_syntax: bool = field(default=False, compare=False)


class _AddressParser:
    def __init__(self, data: bytes) -> None:
        self.p = Rfc822Parser(data, keep_comment=True, nul_replacement=True)
        self.addrs: list[Address] = []
        self.cur = Address()
        self.str = bytearray()  # Dovecot's ctx->str: the last local-part/domain/phrase text

    def add(self) -> None:
        self.addrs.append(self.cur)
        self.cur = Address()

    def local_part(self) -> int:
        # RFC 5322 §3.4.1 local-part = dot-atom / quoted-string / obs-local-part
        out = self.str = bytearray()
        if self.p.data[self.p.pos] == 0x22:
            ret = self.p.parse_quoted_string(out)
        else:
            ret = self._nonstrict_dot_atom(out)
        if ret < 0:
            return -1
        self.cur.mailbox = bytes(out)
        return ret

    def _nonstrict_dot_atom(self, out: bytearray) -> int:
        # RFC 5322 §4.4 obs-local-part, more lenient still (Dovecot NON_STRICT_DOTS): leading,
        # trailing and repeated dots are kept ("john..doe@example.com" is common in the wild)
        p = self.p
        ret = -1
        while True:
            while p.pos < p.end and p.data[p.pos] == 0x2E:
                out += b"."
                p.pos += 1
                if p.pos >= p.end:
                    return 0
                ret = 1
            if p.data[p.pos] == 0x40:
                break
            ret = p.parse_atom(out)
            if not (ret > 0 and p.data[p.pos] == 0x2E):
                break
        return ret

    def domain(self) -> int:
        out = self.str = bytearray()
        ret = self.p.parse_domain(out)
        if ret < 0:
            return -1
        self.cur.domain = bytes(out)
        return ret

    def domain_list(self) -> int:
        # RFC 5322 §4.4 obs-domain-list = "@" domain *(*(CFWS / ",") [CFWS] "@" domain)
        out = bytearray()
        p = self.p
        while True:
            if p.pos >= p.end:
                return 0
            if p.data[p.pos] != 0x40:
                break
            if out:
                out += b","
            out += b"@"
            ret = p.parse_domain(out)
            if ret <= 0:
                return ret
            while p.skip_lwsp() > 0 and p.data[p.pos] == 0x2C:
                p.pos += 1
        self.cur.route = bytes(out)
        return 1

    def angle_addr(self) -> int:
        # RFC 5322 §3.4 angle-addr = "<" [obs-route] addr-spec ">"
        p = self.p
        p.pos += 1
        if p.skip_lwsp() <= 0:
            return -1
        if p.data[p.pos] == 0x40:
            if self.domain_list() > 0 and p.peek() == 0x3A:
                p.pos += 1
            else:
                self.cur.route = b"INVALID_ROUTE"
                if p.pos >= p.end:
                    return -1
            if p.skip_lwsp() <= 0:
                return -1
        if p.data[p.pos] != 0x3E:  # "<>" is not a valid address, but parses
            if self.local_part() <= 0:
                return -1
            if p.data[p.pos] == 0x40 and self.domain() <= 0:
                return -1
        if p.peek() != 0x3E:
            return -1
        p.pos += 1
        return p.skip_lwsp()

    def name_addr(self) -> int:
        # RFC 5322 §3.4 name-addr = [display-name] angle-addr
        out = bytearray()
        if self.p.parse_phrase(out) <= 0 or self.p.data[self.p.pos] != 0x3C:
            return -1
        self.cur.name = bytes(out) or None
        if self.angle_addr() < 0:
            self.cur.domain = b"SYNTAX_ERROR"
            self.cur.invalid_syntax = True
        return 1 if self.p.pos < self.p.end else 0

    def addr_spec(self) -> int:
        # RFC 5322 §3.4.1 addr-spec = local-part "@" domain
        p = self.p
        assert p.last_comment is not None
        del p.last_comment[:]
        quoted = p.data[p.pos] == 0x22
        ret2 = -2
        ret = self.local_part()
        if ret <= 0:
            self.cur.invalid_syntax = True
        if ret != 0 and p.pos < p.end and p.data[p.pos] == 0x40:
            ret2 = self.domain()
            if ret2 <= 0:
                ret = ret2
        if p.last_comment:
            self.cur.name = bytes(p.last_comment)
        elif ret2 == -2:
            # a lone "user": a mailbox, unless more words follow, which make it a display name
            out = self.str
            out += b" "
            orig = len(out)
            if p.pos < p.end:
                p.parse_phrase(out)
            if len(out) != orig:
                self.cur.mailbox = None
                self.cur.name = bytes(out)
            elif not quoted:
                self.cur.domain = b""
            self.cur.invalid_syntax = True
            ret = -1
        return ret

    def add_fixed(self) -> None:
        if self.cur.mailbox is None:
            self.cur.mailbox = b"MISSING_MAILBOX"
            self.cur.invalid_syntax = True
        if not self.cur.domain:
            self.cur.domain = b"MISSING_DOMAIN"
            self.cur.invalid_syntax = True
        self.add()

    def mailbox(self) -> int:
        # RFC 5322 §3.4 mailbox = name-addr / addr-spec
        start = self.p.pos
        ret = self.name_addr()
        if ret < 0:
            self.p.pos = start
            self.cur = Address()
            ret = self.addr_spec()
            c = self.cur
            if c.invalid_syntax and c.name is None and c.mailbox is not None and c.domain is None:
                c.name, c.mailbox = c.mailbox, None
        if ret < 0:
            self.cur.invalid_syntax = True
        self.add_fixed()
        return ret

    def group(self) -> int:
        # RFC 5322 §3.4 group = display-name ":" [group-list] ";" [CFWS]
        p = self.p
        out = bytearray()
        if p.parse_phrase(out) <= 0 or p.data[p.pos] != 0x3A:
            return -1
        p.pos += 1
        ret = p.skip_lwsp()
        if ret <= 0:
            self.cur.invalid_syntax = True
        self.cur.mailbox = bytes(out)
        self.add()
        if ret > 0 and p.data[p.pos] != 0x3B:
            while True:
                self.mailbox()
                if p.pos >= p.end or p.data[p.pos] != 0x2C:
                    break
                p.pos += 1
                if p.skip_lwsp() <= 0:
                    ret = -1
                    break
        if ret >= 0:
            if p.pos >= p.end or p.data[p.pos] != 0x3B:
                ret = -1
            else:
                p.pos += 1
                ret = p.skip_lwsp()
        if ret < 0:
            self.cur.invalid_syntax = True
        self.add()  # group end marker: all None
        return 0 if ret == 0 else 1

    def address(self) -> int:
        # RFC 5322 §3.4 address = mailbox / group
        start = self.p.pos
        ret = self.group()
        if ret < 0:
            self.p.pos = start
            self.cur = Address()
            ret = self.mailbox()
        return ret

    def address_list(self) -> None:
        # RFC 5322 §3.4 address-list = (address *("," address)) / obs-addr-list
        p = self.p
        while True:
            if self.address() == 0:
                break
            if p.pos >= p.end or p.data[p.pos] != 0x2C:
                break
            p.pos += 1
            ret = p.skip_lwsp()
            if ret <= 0:
                if ret < 0:
                    self.add_fixed()  # ends with some garbage
                break


def parse_address_list(value: bytes) -> list[Address] | None:
    """Addresses of an address header as Dovecot's ENVELOPE shows them, None if there are none."""
    parser = _AddressParser(value)
    if parser.p.skip_lwsp() <= 0:
        return None
    parser.address_list()
    return parser.addrs or None
