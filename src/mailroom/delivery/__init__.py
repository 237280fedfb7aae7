"""Outbound delivery: the building blocks under the queue runner.

- :mod:`~mailroom.delivery.routing`: ``await resolve_route(domain, resolver, rng=..., ipv6=...,
  smarthosts=...)`` -> ``Route(targets | failure)``: MX order (RFC 5321 §5.1), implicit MX, null MX
  (RFC 7505), address literals, smarthosts. Uses :mod:`mailroom.dns` only through its ``Resolver``.
- :mod:`~mailroom.delivery.schedule` (pure): ``after_temporary_failure(policy, queued_at=, now=,
  attempts=, warned=, rng=)`` -> ``Retry(at, warn)`` or ``GiveUp(reason, status)``.
- :mod:`~mailroom.delivery.dsn` (pure): ``build_dsn(DsnReport, original_stream)`` -> ``Dsn`` (RFC 3464
  bytes to queue from ``<>``) or None (null sender, NOTIFY).
- :mod:`~mailroom.delivery.srs` (pure): ``SRS(keys).forward(sender, our_domain, now)`` /
  ``.reverse(address, now)`` -> original or ``SRSInvalid`` (postsrsd-compatible SRS0/SRS1).
- The SMTP client itself is the sans-I/O engine :mod:`mailroom.wire.smtp.client`
  (``SMTPClientEngine``): one ``TransactionDone`` per ``send_mail`` with a reply and an outcome
  (delivered / temporary / permanent) per recipient.

How a runner puts them together, per (domain, batch of recipients):

1. ``route = await resolve_route(...)``; ``route.failure`` -> every recipient gets that reply
   (5xx: bounce now; 4xx: ``after_temporary_failure``).
2. For each ``route.targets`` in order: connect to ``address:port`` (source address from config),
   drive ``SMTPClientEngine`` (EHLO with our hostname, STARTTLS when offered, AUTH for relays,
   ``send_mail``). Connection failures and 4xx greetings move on to the next target; recipients
   with a 4xx result may be retried on the next target; 5xx results and 2xx are final.
3. Record the results; temporary ones get ``after_temporary_failure``; on ``GiveUp`` or a 5xx,
   ``build_dsn`` (Action failed) in the same transaction; ``Retry.warn`` -> a "delayed" DSN once.
   A remote without DSN support and NOTIFY=SUCCESS -> a "relayed" DSN (RFC 3461 §4.1).
"""
