"""A small HTTP/1.1 surface: request head parsing, responses and a pluggable router.

Only what mailroom's pages need (RFC 9112): GET/HEAD (other methods where a route allows them),
no request bodies beyond a small discarded Content-Length one, keep-alive, absolute-form targets
from proxies. Routes are added by whoever owns a page: ACME http-01 now, client autoconfig and the
MTA-STS policy later (``Router.add``).
"""

from __future__ import annotations

import datetime
import email.utils
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

MAX_HEAD = 16 * 1024
MAX_HEADERS = 100
MAX_BODY = 64 * 1024

REASONS = {
    200: "OK",
    204: "No Content",
    301: "Moved Permanently",
    308: "Permanent Redirect",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    421: "Misdirected Request",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}
_TOKEN = set("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class HTTPError(Exception):
    """A request we answer with ``status`` and then close the connection."""

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(message or REASONS.get(status, ""))
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    path: str
    query: str
    version: str  # "HTTP/1.1" or "HTTP/1.0"
    headers: tuple[tuple[str, str], ...]  # names lower-cased, in order
    https: bool = False
    peer_ip: str = ""
    body: bytes = b""  # at most MAX_BODY (Outlook autodiscover POSTs its request as XML)

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), default)

    @property
    def host(self) -> str:
        """The Host header without port, lower-cased."""
        host = self.header("host").strip().lower()
        if host.startswith("["):
            return host[: host.find("]") + 1]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.header("connection").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)

    def head_bytes(self, *, close: bool, now: datetime.datetime | None = None) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}"]
        stamp = now or datetime.datetime.now(datetime.UTC)
        lines.append(f"Date: {email.utils.format_datetime(stamp, usegmt=True)}")
        lines.append("Server: mailroom")
        if self.status not in (204, 304):
            lines.append(f"Content-Type: {self.content_type}")
            lines.append(f"Content-Length: {len(self.body)}")
        lines.extend(f"{name}: {value}" for name, value in self.headers)
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def text(status: int, message: str = "") -> Response:
    return Response(status, ((message or REASONS.get(status, "")) + "\n").encode())


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Route:
    path: str
    handler: Handler
    prefix: bool
    methods: frozenset[str]


class Router:
    """Exact paths first, then the longest matching prefix."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self, path: str, handler: Handler, *, prefix: bool = False, methods: tuple[str, ...] = ("GET", "HEAD")
    ) -> None:
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        self.routes.append(Route(path, handler, prefix, frozenset(methods)))

    def find(self, path: str) -> Route | None:
        exact = [r for r in self.routes if not r.prefix and r.path == path]
        if exact:
            return exact[0]
        matches = [r for r in self.routes if r.prefix and path.startswith(r.path)]
        return max(matches, key=lambda r: len(r.path)) if matches else None

    async def dispatch(self, request: Request) -> Response:
        route = self.find(request.path)
        if route is None:
            return text(404)
        if request.method not in route.methods:
            response = text(405)
            response.headers.append(("Allow", ", ".join(sorted(route.methods))))
            return response
        return await route.handler(request)


def head_complete(buffer: bytes | bytearray) -> int:
    """Index just past the blank line ending the request head, or -1 (HTTPError 431 when too big)."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        bare = buffer.find(b"\n\n")  # RFC 9112 §2.2: a recipient MAY accept bare LF
        if bare >= 0:
            return bare + 2
        if len(buffer) > MAX_HEAD:
            raise HTTPError(431)
        return -1
    if end + 4 > MAX_HEAD:
        raise HTTPError(431)
    return end + 4


def parse_head(head: bytes, *, https: bool = False, peer_ip: str = "") -> Request:
    """Request line and header fields (RFC 9112 §3, §5)."""
    try:
        text_head = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes anything
        raise HTTPError(400) from None
    lines = text_head.replace("\r\n", "\n").split("\n")
    while lines and lines[0] == "":  # RFC 9112 §2.2: ignore empty lines before the request line
        lines.pop(0)
    if not lines:
        raise HTTPError(400, "empty request")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise HTTPError(400, "malformed request line")
    method, target, version = parts
    if not method or not set(method) <= _TOKEN:
        raise HTTPError(400, "bad method")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HTTPError(505 if version.startswith("HTTP/") else 400)
    if len(target) > 8192:
        raise HTTPError(414)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            raise HTTPError(400, "obsolete header folding")
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= _TOKEN:
            raise HTTPError(400, "malformed header field")
        headers.append((name.lower(), value.strip(" \t")))
        if len(headers) > MAX_HEADERS:
            raise HTTPError(431)
    if version == "HTTP/1.1" and sum(1 for k, _ in headers if k == "host") != 1:
        raise HTTPError(400, "HTTP/1.1 needs exactly one Host header")
    path_query = target
    if target.startswith(("http://", "https://")):  # absolute-form, from a proxy (RFC 9112 §3.2.2)
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        path_query = rest[slash:] if slash >= 0 else "/"
    elif target == "*" and method == "OPTIONS":
        path_query = "*"
    elif not target.startswith("/"):
        raise HTTPError(400, "bad request target")
    path, _, query = path_query.partition("?")
    return Request(method, target, path, query, version, tuple(headers), https, peer_ip)


def body_length(request: Request) -> int:
    """Bytes of request body to read; HTTPError for what we will not take."""
    if request.header("transfer-encoding"):
        raise HTTPError(
            411 if request.method in ("POST", "PUT") else 400, "chunked request bodies are not accepted"
        )
    values = [v for k, v in request.headers if k == "content-length"]
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].isdigit():
        raise HTTPError(400, "bad Content-Length")
    length = int(values[0])
    if length > MAX_BODY:
        raise HTTPError(413)
    return length
