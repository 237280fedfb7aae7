"""``mailroom dkim ...`` and ``mailroom dns records``: mail-authentication admin commands.

cli.py wires them in with ``cli_auth.register(sub)``; errors follow cli.py's rule (one line,
usage problems exit 2, the rest 1).
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from typing import Any

from mailroom.mailauth import dkim, records


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $CONFIG_PATH, else /etc/mailroom/mailroom.toml, else dev defaults)",
    )
    return common


def _usage(message: str) -> Exception:
    from mailroom.cli import UsageError  # cli imports this module: import it at call time

    return UsageError(message)


def _config(args: argparse.Namespace, drop: bool = True) -> Any:
    from mailroom.app import drop_privileges, resolve_user
    from mailroom.cli import _load

    cfg, _ = _load(args)
    if drop:
        drop_privileges(resolve_user(cfg))  # keys must belong to the user the server runs as
    return cfg


def _addresses(cfg: Any, extra: list[str] | None) -> list[str]:
    found = [a for a in (cfg.delivery.source_ipv4, cfg.delivery.source_ipv6) if a]
    for address in extra or []:
        if address not in found:
            found.append(address)
    return found


# --- commands -----------------------------------------------------------------------------------


def cmd_dkim_generate(args: argparse.Namespace) -> int:
    cfg = _config(args)
    key_type: dkim.KeyType = args.algorithm
    selector = args.selector or datetime.date.today().strftime("%Y%m") + ("r" if key_type == "rsa" else "e")
    data_dir = cfg.data_path
    if not data_dir.is_dir():
        if not cfg.dev:
            raise ValueError(
                f"server.data_dir: {data_dir} does not exist (start the server once, or create it)"
            )
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        key = dkim.generate_key(data_dir, args.domain, selector, key_type)
    except FileExistsError:
        raise _usage(
            f"a DKIM key for {args.domain} with selector {selector} exists; choose another --selector"
        ) from None
    path = dkim.key_path(data_dir, key.domain, key.selector)
    print(f"generated {key.algorithm} key for {key.domain}, selector {key.selector}: {path}")
    print("publish this TXT record (strings of at most 255 bytes, concatenated by readers):")
    print(records.DnsRecord(key.record_name, "TXT", key.record).zone_line())
    return 0


def cmd_dkim_list(args: argparse.Namespace) -> int:
    cfg = _config(args)
    domains = [args.domain] if args.domain else dkim.key_domains(cfg.data_path)
    for domain in domains:
        for key in dkim.load_keys(cfg.data_path, domain):
            print(f"{key.domain}\t{key.selector}\t{key.algorithm}\t{key.record_name}")
    return 0


def _local_domains(args: argparse.Namespace, cfg: Any) -> list[str]:
    """The local domains in the database ([] before the first `mailroom migrate`)."""
    from mailroom.cli import _admin_db
    from mailroom.store import directory
    from mailroom.store.database import db_path

    if not db_path(cfg.data_path).exists():
        return []
    conn = _admin_db(args)
    try:
        return [d.name for d in directory.list_domains(conn)]
    finally:
        conn.close()


def cmd_dns_records(args: argparse.Namespace) -> int:
    cfg = _config(args)
    domains = list(args.domains) or sorted(
        set(_local_domains(args, cfg)) | set(dkim.key_domains(cfg.data_path))
    )
    if not domains:
        raise _usage(
            "no domains: add one with `mailroom domain add`, or name it: mailroom dns records DOMAIN"
        )
    addresses = _addresses(cfg, args.ip)
    hostname = cfg.server.hostname
    out = [
        f"; DNS records for mailroom on {hostname} (zone-file syntax; TXT strings are concatenated by readers)"
    ]
    if not addresses:
        out.append(
            "; no public address configured ([delivery] source_ipv4 / source_ipv6, or --ip): SPF names the host only"
        )
    if hostname in ("localhost", ""):
        out.append("; [server] hostname is localhost: set the server's public name for MX and SPF")
    for domain in domains:
        keys = dkim.load_keys(cfg.data_path, domain)
        recs = records.domain_records(
            domain,
            hostname=hostname,
            addresses=addresses,
            keys=keys,
            report_address=args.report,
            dmarc_policy=args.dmarc_policy,
        )
        out.append("")
        out.append(f"; {domain}")
        if not keys:
            out.append(f"; no DKIM key yet: mailroom dkim generate {domain}")
        out.append(records.zone_text(recs).rstrip("\n"))
    host = records.host_records(hostname, addresses)
    if host:
        out.append("")
        out.append(f"; {hostname} (the HELO name)")
        out.append(records.zone_text(host).rstrip("\n"))
    sys.stdout.write("\n".join(out) + "\n")
    return 0


# --- wiring -------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``dkim`` and ``dns`` to cli.py's subcommands (``sub`` is its add_subparsers() result)."""
    common = _common()

    def add(
        parent: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, parents=[common], description=help)
        p.set_defaults(func=fn)
        return p

    dk = sub.add_parser("dkim", help="DKIM signing keys").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(dk, "generate", cmd_dkim_generate, "make a DKIM key for a domain and print its DNS record")
    p.add_argument("domain")
    p.add_argument("--selector", "-s", help="selector name (default: YYYYMM plus r or e)")
    p.add_argument(
        "--algorithm", "-a", choices=dkim.KEY_TYPES, default="rsa", help="rsa (2048-bit) or ed25519"
    )
    p = add(dk, "list", cmd_dkim_list, "list DKIM keys on disk")
    p.add_argument("domain", nargs="?")

    dns = sub.add_parser("dns", help="DNS records to publish").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(
        dns,
        "records",
        cmd_dns_records,
        "print the MX, SPF, DKIM and DMARC records each domain should publish",
    )
    p.add_argument(
        "domains", nargs="*", metavar="DOMAIN", help="default: every local domain and every domain with a key"
    )
    p.add_argument("--ip", action="append", metavar="ADDR", help="a public sending address (repeatable)")
    p.add_argument(
        "--report", metavar="ADDR", help="DMARC aggregate report address (default: postmaster@DOMAIN)"
    )
    p.add_argument(
        "--dmarc-policy",
        choices=("none", "quarantine", "reject"),
        default="quarantine",
        help="DMARC p= (default quarantine)",
    )
