"""Mail authentication: SPF (RFC 7208), DKIM (RFC 6376, RFC 8463, RFC 8301), DMARC (RFC 7489),
Authentication-Results (RFC 8601), and the MX's verdict.

Thin, typed wrappers over dkimpy and pyspf; DMARC is our own small evaluator over the Public Suffix
List of the ``publicsuffixlist`` package. DNS is seen only through :mod:`mailroom.mailauth.resolver`
(``from_dns(resolver)`` adapts :mod:`mailroom.dns`); results are values, never exceptions.

Modules: ``resolver`` (DnsLookup, Answer, from_dns), ``spf``, ``dkim`` (sign, verify, keys),
``dmarc``, ``results`` (A-R header), ``verdict`` (policy), ``inbound`` (the MX pipeline),
``records`` (DNS records to publish).
"""
