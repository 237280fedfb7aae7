"""A DnsLookup fed from the OpenSPF suites' ``zonedata`` (the suite drivers' conventions).

- ``SPF`` records are also served as TXT when the name has no TXT entry at all (RFC 7208 suite
  header: "auto-magic duplication of SPF to TXT records by test suite drivers"); ``TXT: NONE``
  marks "has no TXT" and suppresses the duplication.
- a bare ``TIMEOUT`` entry: a lookup for a type with no record listed before it times out.
- ``CNAME`` is followed, as a recursive resolver would; a loop answers no data.
- a name absent from zonedata is NXDOMAIN; present without the type, NODATA.
"""

from __future__ import annotations

from typing import Any

from mailroom.mailauth.resolver import Answer, RRType


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


class ZoneLookup:
    def __init__(self, zonedata: dict[str, list[Any]]) -> None:
        self.zone: dict[str, list[Any]] = {}
        for name, entries in (zonedata or {}).items():
            out: list[Any] = []
            has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
            spf_as_txt: list[Any] = []
            for entry in entries:
                if entry == "TIMEOUT" or (isinstance(entry, dict) and entry.get("TIMEOUT") is True):
                    out.append("TIMEOUT")
                    continue
                for rtype, value in entry.items():
                    if rtype == "SPF" and not has_txt and value != "NONE":
                        spf_as_txt.append(("TXT", _text(value)))
                    if value == "NONE":
                        continue
                    if rtype in ("TXT", "SPF"):
                        value = _text(value)
                    elif rtype == "MX":
                        value = f"{int(value[0])} {str(value[1]).rstrip('.').lower()}"
                    elif rtype in ("PTR", "CNAME"):
                        value = str(value).rstrip(".").lower()
                    out.append((rtype, value))
            self.zone[name.lower().rstrip(".")] = out + spf_as_txt
        self.queries: list[tuple[str, str]] = []

    async def __call__(self, name: str, rdtype: RRType, /) -> Answer:
        current = name.lower().rstrip(".")
        self.queries.append((current, rdtype))
        for _ in range(10):
            entries = self.zone.get(current)
            if entries is None:
                return Answer.nxdomain(f"{current} not in zonedata")
            found: list[str] = []
            cname = None
            for entry in entries:
                if entry == "TIMEOUT":
                    if not found:
                        return Answer.temperror(f"timeout for {current} {rdtype}")
                    break
                rtype, value = entry
                if rtype == rdtype:
                    if value == "TIMEOUT":
                        return Answer.temperror(f"timeout for {current} {rdtype}")
                    found.append(value)
                elif rtype == "CNAME":
                    cname = value
            if found:
                return Answer.found(found)
            if cname is None:
                return Answer.nodata()
            current = cname
        return Answer.nodata("CNAME loop")  # RFC 7208 suite ptr-cname-loop: the name is skipped
