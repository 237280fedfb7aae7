"""The MTA-STS policy at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt`` (RFC 8461 §3.3).

The domain comes from the Host header; only domains listed in ``<data_dir>/mta-sts.json`` (written
by ``mailroom init`` and ``mailroom check``) get a policy, in the mode decided there (or forced by
``[public] mta_sts``). Senders fetch it over HTTPS only; it is answered on the http listener too,
for a reverse proxy that terminates TLS in front of mailroom.
"""

from __future__ import annotations

from mailroom.config import Config
from mailroom.quickstart import mtasts as policy
from mailroom.web.http import Request, Response, Router, text

POLICY_PATH = "/.well-known/mta-sts.txt"


def policy_response(cfg: Config, request: Request) -> Response:
    host = request.host
    if not host.startswith("mta-sts."):
        return text(404, "the MTA-STS policy is served at https://mta-sts.<domain>/.well-known/mta-sts.txt")
    domain = host.removeprefix("mta-sts.")
    mode = policy.domain_mode(cfg, domain)
    if mode is None:
        return text(404, f"no MTA-STS policy for {domain}")
    body = policy.policy_text(mode, [cfg.server.hostname]).encode("ascii")
    # RFC 8461 §3.3: media type "text/plain"; caching is governed by max_age, not HTTP.
    return Response(200, body, "text/plain", [("Cache-Control", "no-cache")])


def register(router: Router, cfg: Config) -> None:
    async def serve(request: Request) -> Response:
        return policy_response(cfg, request)

    from mailroom.web.autoconfig import add_default

    add_default(router, POLICY_PATH, serve)
