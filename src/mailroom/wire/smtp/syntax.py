"""SMTP command-argument grammar: paths, mailboxes, ESMTP parameters, xtext.

RFC 5321 §4.1.2 with the RFC 6531 §3.3 UTF-8 extensions. Functions raise :class:`SMTPError`
carrying the reply to send; they never raise anything else on any input.

Canonical address form returned to the session: ``local@domain`` where ``local`` is written as a
Dot-string when it can be one and otherwise as a Quoted-string with only ``"`` and ``\\`` escaped
(RFC 5321 §4.1.2: "a local part that can be a Dot-string must be sent without quotes").
``"john"@x`` becomes ``john@x``; ``"john doe"@x`` stays ``"john doe"@x``; ``"a\\b"@x`` becomes
``ab@x``. The domain is returned as written (case kept); the source route is dropped.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from dataclasses import dataclass

from mailroom.wire.smtp.events import BodyType, MailParams, RcptParams, RetType
from mailroom.wire.smtp.replies import BAD_BASE64, SMTPError, reply, syntax_error, unknown_parameter

# RFC 5321 §4.1.2 / RFC 5322 §3.2.3: atext; RFC 6531 §3.3: atext =/ UTF8-non-ascii.
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
# Domain characters: ALPHA / DIGIT / "-" / "." (and UTF8-non-ascii for U-labels).
_DOMAIN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
# RFC 5321 §4.1.2: esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
# RFC 5321 §4.1.3: IPv4-address-literal = Snum 3("." Snum); Snum = 1*3DIGIT (0-255)
_IPV4 = re.compile(r"([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})")
# RFC 5321 §4.1.3: General-address-literal = Standardized-tag ":" 1*dcontent; Standardized-tag = Ldh-str
_GENERAL_TAG = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
# RFC 4422 §3.1: sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / "-" / "_"
_SASL_MECH = re.compile(r"[A-Za-z0-9_-]{1,20}")
_LOCAL_CHARS = _ATEXT | {"."}
_MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2

MAIL_USAGE = "Syntax: MAIL FROM:<address> [parameters]"
RCPT_USAGE = "Syntax: RCPT TO:<address> [parameters]"
BAD_SENDER = reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = reply(501, "5.1.3", "Bad recipient address syntax")


def _is_non_ascii(ch: str) -> bool:
    return ord(ch) > 0x7F


def _is_atext(ch: str) -> bool:
    return ch in _ATEXT or _is_non_ascii(ch)


def is_dot_string(s: str) -> bool:
    """RFC 5321 §4.1.2: Dot-string = Atom *("." Atom); Atom = 1*atext."""
    return bool(s) and all(atom and all(_is_atext(c) for c in atom) for atom in s.split("."))


def quote_local_part(local: str) -> str:
    """The canonical spelling of a local part (see the module docstring)."""
    if is_dot_string(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def is_domain(s: str) -> bool:
    """RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str].

    RFC 6531 §3.3 adds U-labels; any non-ASCII character counts as a letter here (IDNA validation
    belongs to the policy layer, not the wire grammar).
    """
    if not s or len(s.encode("utf-8")) > _MAX_DOMAIN:
        return False
    for label in s.split("."):
        if not label or label[0] == "-" or label[-1] == "-":
            return False
        if not all(c in _DOMAIN_CHARS or _is_non_ascii(c) for c in label):
            return False
    return True


def is_address_literal(s: str) -> bool:
    """RFC 5321 §4.1.3: "[" ( IPv4 / "IPv6:" IPv6 / General-address-literal ) "]"."""
    if len(s) < 3 or s[0] != "[" or s[-1] != "]":
        return False
    inner = s[1:-1]
    m = _IPV4.fullmatch(inner)
    if m:
        return all(int(g) <= 255 for g in m.groups())
    tag, colon, rest = inner.partition(":")
    if not colon or not rest:
        return False
    if tag.lower() == "ipv6":
        # The stdlib parser also takes zone ids ("%eth0"), which the ABNF does not allow.
        if not all(c in "0123456789abcdefABCDEF:." for c in rest):
            return False
        try:
            ipaddress.IPv6Address(rest)
        except ValueError:
            return False
        return True
    # RFC 5321 §4.1.3: dcontent = %d33-90 / %d94-126 (printable ASCII except "[", "\", "]").
    return bool(_GENERAL_TAG.fullmatch(tag)) and all(33 <= ord(c) <= 126 and c not in "[\\]" for c in rest)


class _Scanner:
    __slots__ = ("pos", "text")

    def __init__(self, text: str, pos: int = 0) -> None:
        self.text = text
        self.pos = pos

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def take(self, ch: str) -> bool:
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def take_while(self, ok: frozenset[str] | None, *, non_ascii: bool) -> str:
        start = self.pos
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if (ok is not None and c in ok) or (non_ascii and _is_non_ascii(c)):
                self.pos += 1
            else:
                break
        return text[start : self.pos]


def _scan_domain(sc: _Scanner) -> str | None:
    """Domain / address-literal at the scanner position, or None."""
    if sc.peek() == "[":
        end = sc.text.find("]", sc.pos)
        if end < 0:
            return None
        literal = sc.text[sc.pos : end + 1]
        if not is_address_literal(literal):
            return None
        sc.pos = end + 1
        return literal
    domain = sc.take_while(_DOMAIN_CHARS, non_ascii=True)
    return domain if is_domain(domain) else None


def _scan_local_part(sc: _Scanner) -> str | None:
    """Local-part = Dot-string / Quoted-string; returns the unquoted content, or None."""
    if sc.take('"'):
        # RFC 5321 §4.1.2: QcontentSMTP = qtextSMTP / quoted-pairSMTP
        #   qtextSMTP = %d32-33 / %d35-91 / %d93-126 (RFC 6531: =/ UTF8-non-ascii)
        #   quoted-pairSMTP = %d92 %d32-126
        out: list[str] = []
        text = sc.text
        while sc.pos < len(text):
            c = text[sc.pos]
            sc.pos += 1
            if c == '"':
                return "".join(out)
            if c == "\\":
                if sc.pos >= len(text) or not 32 <= ord(text[sc.pos]) <= 126:
                    return None
                out.append(text[sc.pos])
                sc.pos += 1
            elif 32 <= ord(c) <= 126 or _is_non_ascii(c):
                out.append(c)
            else:
                return None
        return None
    local = sc.take_while(_LOCAL_CHARS, non_ascii=True)
    return local if is_dot_string(local) else None


@dataclass(frozen=True)
class Path:
    address: str  # canonical form; "" for the null path
    end: int  # index just after ">"


def parse_path(text: str, pos: int, *, reverse: bool) -> Path | None:
    """Parse ``<...>`` starting at ``text[pos]``.

    RFC 5321 §4.1.2:
      Reverse-path = Path / "<>"
      Forward-path = Path
      Path = "<" [ A-d-l ":" ] Mailbox ">"
      A-d-l = At-domain *( "," At-domain ); At-domain = "@" Domain
      Mailbox = Local-part "@" ( Domain / address-literal )
    RFC 5321 §4.1.1.3: "<Postmaster>" without a domain is a valid forward-path.
    """
    sc = _Scanner(text, pos)
    if not sc.take("<"):
        return None
    if sc.take(">"):
        return Path("", sc.pos) if reverse else None
    if sc.peek() == "@":
        # RFC 5321 §4.1.1.3 / Appendix C: accept a source route and ignore it.
        while True:
            if not sc.take("@") or _scan_domain(sc) is None:
                return None
            if sc.take(":"):
                break
            if not sc.take(","):
                return None
    local = _scan_local_part(sc)
    if local is None:
        return None
    if not reverse and sc.peek() == ">" and local.lower() == "postmaster":
        # RFC 5321 §4.1.1.3: RCPT TO:<Postmaster> (any case, no domain).
        sc.pos += 1
        return Path(local, sc.pos)
    if not sc.take("@"):
        return None
    domain = _scan_domain(sc)
    if domain is None or not sc.take(">"):
        return None
    return Path(f"{quote_local_part(local)}@{domain}", sc.pos)


def split_params(text: str) -> list[tuple[str, str | None]]:
    """RFC 5321 §4.1.2: esmtp-param = esmtp-keyword ["=" esmtp-value], separated by SP.

    Keywords are returned upper-cased. Lenient: runs of spaces and trailing spaces are accepted,
    and a value may contain "=" (seen in the wild in unencoded ORCPT values).
    """
    params: list[tuple[str, str | None]] = []
    for item in text.split(" "):
        if not item:
            continue
        keyword, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(keyword):
            raise SMTPError(syntax_error(f"Bad parameter syntax: {_printable(keyword)}"))
        if eq:
            # RFC 5321 §4.1.2: esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds UTF-8.
            if not value or not all(ord(c) > 32 and ord(c) != 127 for c in value):
                raise SMTPError(syntax_error(f"Bad value for parameter {keyword.upper()}"))
            params.append((keyword.upper(), value))
        else:
            params.append((keyword.upper(), None))
    return params


def _printable(s: str) -> str:
    return "".join(c if 32 < ord(c) < 127 else "?" for c in s)[:64]


def xtext_decode(value: str, *, utf8: bool = False) -> str:
    """RFC 3461 §4: xtext = *( xchar / hexchar ); hexchar = "+" 2(%x30-39 / %x41-46).

    With ``utf8`` (RFC 6533 §3 utf-8-addr-xtext / unitext), non-ASCII characters are taken as they
    are and ``\\x{HEX}`` stands for one code point. Lower-case hex digits are tolerated.
    """
    out: list[str] = []
    raw = bytearray()
    i = 0
    n = len(value)

    def flush() -> None:
        if raw:
            try:
                out.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise SMTPError(syntax_error("Invalid xtext encoding")) from None
            raw.clear()

    while i < n:
        c = value[i]
        if c == "+":
            hexpair = value[i + 1 : i + 3]
            if len(hexpair) != 2 or not all(h in "0123456789ABCDEFabcdef" for h in hexpair):
                raise SMTPError(syntax_error("Invalid xtext encoding"))
            raw.append(int(hexpair, 16))
            i += 3
        elif utf8 and value.startswith("\\x{", i):
            end = value.find("}", i)
            digits = value[i + 3 : end] if end > 0 else ""
            if not 1 <= len(digits) <= 6 or not all(h in "0123456789ABCDEFabcdef" for h in digits):
                raise SMTPError(syntax_error("Invalid xtext encoding"))
            point = int(digits, 16)
            if point > 0x10FFFF or 0xD800 <= point <= 0xDFFF:
                raise SMTPError(syntax_error("Invalid xtext encoding"))
            flush()
            out.append(chr(point))
            i = end + 1
        elif 33 <= ord(c) <= 126:
            raw.append(ord(c))
            i += 1
        elif utf8 and _is_non_ascii(c):
            flush()
            out.append(c)
            i += 1
        else:
            raise SMTPError(syntax_error("Invalid xtext encoding"))
    flush()
    return "".join(out)


_BODY_TYPES: dict[str, BodyType] = {"7BIT": "7BIT", "8BITMIME": "8BITMIME", "BINARYMIME": "BINARYMIME"}
_RET_TYPES: dict[str, RetType] = {"FULL": "FULL", "HDRS": "HDRS"}
_NOTIFY_VALUES = ("SUCCESS", "FAILURE", "DELAY")


def parse_mail_params(text: str, *, dsn: bool, auth: bool) -> MailParams:
    """MAIL parameters: SIZE, BODY, SMTPUTF8, and RET/ENVID (DSN), AUTH (when AUTH is offered)."""
    size: int | None = None
    body: BodyType | None = None
    smtputf8 = False
    ret: RetType | None = None
    envid: str | None = None
    auth_value: str | None = None
    seen: set[str] = set()
    for keyword, value in split_params(text):
        if keyword in seen:
            # RFC 1869 §6 / RFC 3461 §4: a parameter may appear at most once.
            raise SMTPError(syntax_error(f"Duplicate parameter {keyword}"))
        seen.add(keyword)
        if keyword == "SIZE":
            # RFC 1870 §3: size-value = 1*20DIGIT
            if value is None or not (value.isascii() and value.isdigit()) or len(value) > 20:
                raise SMTPError(syntax_error("Syntax: SIZE=<octets>"))
            size = int(value)
        elif keyword == "BODY":
            # RFC 6152 §2 / RFC 3030 §3: BODY=7BIT / 8BITMIME / BINARYMIME
            body = _BODY_TYPES.get((value or "").upper())
            if body is None:
                raise SMTPError(syntax_error("Syntax: BODY=7BIT|8BITMIME|BINARYMIME"))
        elif keyword == "SMTPUTF8":
            # RFC 6531 §3.4: the SMTPUTF8 parameter takes no value.
            if value is not None:
                raise SMTPError(syntax_error("SMTPUTF8 takes no value"))
            smtputf8 = True
        elif keyword == "RET" and dsn:
            # RFC 3461 §4.3: ret-value = "FULL" / "HDRS"
            ret = _RET_TYPES.get((value or "").upper())
            if ret is None:
                raise SMTPError(syntax_error("Syntax: RET=FULL|HDRS"))
        elif keyword == "ENVID" and dsn:
            # RFC 3461 §4.4: ENVID=xtext, at most 100 characters.
            if value is None or len(value) > 100:
                raise SMTPError(syntax_error("Syntax: ENVID=<xtext, at most 100 characters>"))
            envid = xtext_decode(value)
        elif keyword == "AUTH" and auth:
            # RFC 4954 §5: AUTH=xtext(addr-spec) / "<>"
            if value is None:
                raise SMTPError(syntax_error("Syntax: AUTH=<mailbox>|<>"))
            auth_value = value if value == "<>" else xtext_decode(value)
        else:
            raise SMTPError(unknown_parameter(keyword))
    return MailParams(size=size, body=body, smtputf8=smtputf8, ret=ret, envid=envid, auth=auth_value)


def parse_rcpt_params(text: str, *, dsn: bool) -> RcptParams:
    """RCPT parameters: NOTIFY and ORCPT (RFC 3461), when DSN is offered."""
    notify: tuple[str, ...] | None = None
    orcpt: str | None = None
    seen: set[str] = set()
    for keyword, value in split_params(text):
        if keyword in seen:
            raise SMTPError(syntax_error(f"Duplicate parameter {keyword}"))
        seen.add(keyword)
        if keyword == "NOTIFY" and dsn:
            # RFC 3461 §4.1: notify-esmtp-value = "NEVER" / 1#notify-list-element
            #   notify-list-element = "SUCCESS" / "FAILURE" / "DELAY"
            items = tuple((value or "").upper().split(","))
            if items != ("NEVER",) and (
                len(set(items)) != len(items) or not all(i in _NOTIFY_VALUES for i in items)
            ):
                raise SMTPError(syntax_error("Syntax: NOTIFY=NEVER|SUCCESS,FAILURE,DELAY"))
            notify = items
        elif keyword == "ORCPT" and dsn:
            # RFC 3461 §4.2: orcpt-value = addr-type ";" xtext, at most 500 characters;
            #   addr-type = atom. RFC 6533 §3: the "utf-8" type uses utf-8-addr-xtext.
            addr_type, semi, encoded = (value or "").partition(";")
            if not semi or not addr_type or not encoded or len(value or "") > 500:
                raise SMTPError(syntax_error("Syntax: ORCPT=<addr-type>;<xtext>"))
            if not all(c in _ATEXT for c in addr_type):
                raise SMTPError(syntax_error("Syntax: ORCPT=<addr-type>;<xtext>"))
            orcpt = f"{addr_type};{xtext_decode(encoded, utf8=addr_type.lower() == 'utf-8')}"
        else:
            raise SMTPError(unknown_parameter(keyword))
    return RcptParams(notify=notify, orcpt=orcpt)


def parse_auth(args: str) -> tuple[str, bytes | None]:
    """RFC 4954 §4: "AUTH" SP sasl-mech [SP initial-response]; initial-response = base64 / "=".

    Returns the mechanism upper-cased (unchecked against the configured list) and the decoded
    initial response.
    """
    parts = args.split(" ")
    if not 1 <= len(parts) <= 2 or not _SASL_MECH.fullmatch(parts[0]):
        raise SMTPError(syntax_error("Syntax: AUTH <mechanism> [initial-response]"))
    initial = decode_base64(parts[1]) if len(parts) == 2 else None
    return parts[0].upper(), initial


def decode_base64(text: str) -> bytes:
    """RFC 4954 §4: a client response is base64; a lone "=" is the empty response."""
    if text == "=":
        return b""
    if not text.isascii():
        raise SMTPError(BAD_BASE64)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SMTPError(BAD_BASE64) from None
