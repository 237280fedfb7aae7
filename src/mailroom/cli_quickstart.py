"""``mailroom init`` and ``mailroom check``: the quickstart commands.

cli.py wires them in with ``cli_quickstart.register(sub)``; errors follow cli.py's rule (one line,
usage problems exit 2, the rest 1). ``check`` exits 1 when anything is missing or wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mailroom.quickstart.systemd import DEFAULT_UNIT_PATH

COLOURS = {"ok": "32", "missing": "31", "wrong": "31", "error": "33", "skipped": "2"}


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $CONFIG_PATH, else /etc/mailroom/mailroom.toml)",
    )
    return common


def _usage(message: str) -> Exception:
    from mailroom.cli import UsageError  # cli imports this module: import it at call time

    return UsageError(message)


# --- init ---------------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    from mailroom import config as configmod
    from mailroom.quickstart.init import InitError, InitOptions, run_init
    from mailroom.quickstart.records import ptr_address, table, zone_snippet

    config_path = Path(args.config or os.environ.get("CONFIG_PATH") or configmod.DEFAULT_CONFIG_PATH)
    opts = InitOptions(
        hostname=args.hostname,
        domain=args.domain,
        admin=args.admin,
        public_ips=args.public_ip or [],
        config_path=config_path,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        user=args.user,
        tls=args.tls,
        cert=args.cert or "",
        key=args.key or "",
        nameservers=args.nameserver or [],
        bind=args.bind or [],
        settings=args.set or [],
        systemd=Path(args.systemd_unit) if args.systemd_unit else DEFAULT_UNIT_PATH if args.systemd else None,
    )
    try:
        result = run_init(opts)
    except InitError as exc:
        raise _usage(str(exc)) from None
    except OSError as exc:  # everything made so far was removed again
        raise _usage(
            f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc} (nothing was left behind)"
        ) from None
    cfg = result.cfg
    host = cfg.server.hostname
    domain = result.admin.rpartition("@")[2]
    out = [
        f"mailroom init: {host} for {domain}",
        f"  config:    {result.config_path}",
        f"  data:      {cfg.data_path} (database, DKIM keys: "
        + ", ".join(f"{k.selector} {'rsa 2048' if k.key_type == 'rsa' else k.key_type}" for k in result.keys)
        + ")",
    ]
    if result.unit_path:
        out.append(
            f"  systemd:   {result.unit_path} (systemctl daemon-reload && systemctl enable --now {result.unit_path.stem})"
        )
    out += [
        f"  admin:     {result.admin}",
        f"  password:  {result.password}",
        "             (shown once and stored nowhere in clear: note it now; "
        f"`mailroom user passwd {result.admin}` sets a new one)",
        "",
        "1. Publish these DNS records (zone-file syntax; TXT strings split at 255 bytes, readers join them):",
        "",
        zone_snippet(result.records),
        "   The same for DNS providers' web forms (TXT values unsplit):",
        "",
        table(result.records),
    ]
    if result.policy:
        out += [
            f"   MTA-STS policy served at https://mta-sts.{domain}/.well-known/mta-sts.txt (RFC 8461);",
            "   `mailroom check` switches it to mode: enforce once the certificate and every record are right:",
            "",
            *("     " + line for line in result.policy.splitlines()),
            "",
        ]
    ptrs = [f"{ptr_address(r)} -> {host}" for r in result.records if r.rtype == "PTR"]
    out.append(
        "2. Ask your hosting provider to set the reverse DNS (PTR): "
        + ("; ".join(ptrs) if ptrs else f"each public address -> {host}")
    )
    start = (
        f"systemctl daemon-reload && systemctl enable --now {result.unit_path.stem}"
        if result.unit_path
        else f"mailroom --config {result.config_path} serve"
    )
    out += [
        f"3. Start the server: {start}",
        f"4. Run `mailroom --config {result.config_path} check` until everything is ok (`--smtp-out` also tests outbound port 25).",
        f"5. Mail clients set themselves up from {result.admin} and the password (autoconfig, autodiscover, SRV);",
        f"   Apple devices: https://{host}/apple/mailroom.mobileconfig?email={result.admin}",
    ]
    for note in result.notes:
        out.append(f"note: {note}")
    sys.stdout.write("\n".join(out) + "\n")
    return 0


# --- check --------------------------------------------------------------------------------------------


def _colour(status: str, width: int, on: bool) -> str:
    word = (status.upper() if status not in ("ok", "skipped") else status).ljust(width)
    return f"\x1b[{COLOURS[status]}m{word}\x1b[0m" if on else word


def _print_findings(findings: Sequence[Any], header: str, host: str, colour: bool) -> None:
    out = [header, ""]
    groups: dict[str, list[Any]] = {}
    for f in findings:
        groups.setdefault(f.domain or f"host {host}", []).append(f)
    for group, items in groups.items():
        out.append(group)
        width = max(len(f.name) for f in items)
        for f in items:
            out.append(
                f"  {_colour(f.status, 8, colour)} {f.rtype.ljust(6)} {f.name.ljust(width)}  {f.detail}"
            )
            if f.fix:
                fix_lines = f.fix.splitlines()
                out.append(f"           fix: {fix_lines[0]}")
                out += [f"                {line}" for line in fix_lines[1:]]
        out.append("")
    sys.stdout.write("\n".join(out))


def cmd_check(args: argparse.Namespace) -> int:
    from mailroom import dns
    from mailroom.cli_auth import _config, _local_domains
    from mailroom.mailauth import dkim
    from mailroom.quickstart import mtasts
    from mailroom.quickstart.check import Context, certificate_names, ready_for_enforce, run_checks
    from mailroom.quickstart.records import plan, table, zone_snippet

    cfg = _config(args)
    if cfg.dev:
        raise _usage("no config file: mailroom check needs the config `mailroom init` wrote (--config PATH)")
    domains = _local_domains(args, cfg)
    if not domains:
        raise _usage(f"no local domains in {cfg.data_path}: run `mailroom init` or `mailroom domain add`")
    keys = {d: dkim.load_keys(cfg.data_path, d) for d in domains}
    notes: list[str] = []
    state = mtasts.read_state(cfg.data_path)
    if cfg.public.mta_sts != "none":
        new = [d for d in domains if d not in state]
        if new:
            for domain in new:
                state[domain] = "testing"
            mtasts.write_state(cfg.data_path, state)
            notes.append(f"MTA-STS: now serving a policy in mode testing for {', '.join(new)}")
    modes = {d: mtasts.effective_mode(cfg, state.get(d)) for d in domains}
    records = plan(cfg, domains, keys, modes)
    if args.records:
        sys.stdout.write(zone_snippet(records) + "\n" + table(records))
        return 0
    if not cfg.dns_enabled:
        raise _usage("[dns] nameservers is empty: DNS lookups are off, nothing can be checked")
    ctx = Context(cfg, dns.from_config(cfg.dns), ca_files=[Path(p) for p in args.ca_file or []])
    findings = asyncio.run(
        run_checks(
            ctx,
            records,
            certificate_names(cfg, domains, modes),
            smtp_out=args.smtp_out or bool(args.smtp_out_target),
            smtp_out_target=args.smtp_out_target,
        )
    )
    failing = [f for f in findings if f.failing]
    switched = []
    if ready_for_enforce(findings) and cfg.public.mta_sts == "auto" and not args.no_enforce:
        for domain in domains:
            if state.get(domain) == "testing":
                state[domain] = "enforce"
                switched.append(domain)
        if switched:
            mtasts.write_state(cfg.data_path, state)
    mta_sts = []
    for domain in domains:
        mode = mtasts.effective_mode(cfg, state.get(domain))
        if mode is None:
            continue
        record = mtasts.txt_record(mtasts.policy_text(mode, [cfg.server.hostname]))
        mta_sts.append({"domain": domain, "mode": mode, "switched": domain in switched, "record": record})
    for item in mta_sts:
        if item["switched"]:
            notes.append(
                f"MTA-STS: certificate and records are right: the policy for {item['domain']} is now mode: enforce "
                f"(stored in {mtasts.state_path(cfg.data_path)}). Publish its new id so senders fetch it:\n"
                f'  _mta-sts.{item["domain"]}. 3600 IN TXT "{item["record"]}"'
            )
    counts = {
        s: sum(1 for f in findings if f.status == s) for s in ("ok", "missing", "wrong", "error", "skipped")
    }
    if args.json:
        json.dump(
            {
                "hostname": cfg.server.hostname,
                "domains": domains,
                "ok": not failing,
                "summary": counts,
                "findings": [f.as_dict() for f in findings],
                "mta_sts": mta_sts,
                "notes": notes,
            },
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        servers = ", ".join(cfg.dns.nameservers)
        header = f"mailroom check: {cfg.server.hostname}, domains {', '.join(domains)} (DNS via {servers})"
        _print_findings(findings, header, cfg.server.hostname, colour)
        for note in notes:
            print(note)
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n or s in ("ok", "missing", "wrong"))
        print(("all good: " if not failing else "") + summary)
    return 1 if failing else 0


# --- wiring -------------------------------------------------------------------------------------------


def register(sub: Any) -> None:
    """Add ``init`` and ``check`` to cli.py's subcommands (``sub`` is its add_subparsers() result)."""
    common = _common()

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, parents=[common], description=help)
        p.set_defaults(func=fn)
        return p

    p = add(
        "init",
        cmd_init,
        "set up a new host: config, database, domain, admin account, DKIM keys, and the DNS records to publish",
    )
    p.add_argument("hostname", metavar="HOSTNAME", help="this host's public name, e.g. mail.example.org")
    p.add_argument("--domain", required=True, help="the mail domain, e.g. example.org")
    p.add_argument(
        "--admin", required=True, metavar="ADDRESS", help="the first account, e.g. you@example.org"
    )
    p.add_argument(
        "--public-ip",
        action="append",
        metavar="IP",
        help="a public address of this host (repeat for IPv4 and IPv6)",
    )
    p.add_argument(
        "--data-dir", metavar="DIR", help="where the database and keys live (default /var/lib/mailroom)"
    )
    p.add_argument(
        "--user", metavar="NAME", help='run the server as NAME (default "mailroom" when run as root)'
    )
    p.add_argument(
        "--tls",
        choices=("acme", "self-signed", "files"),
        default="acme",
        help="certificates: acme (Let's Encrypt, default), self-signed, or files (--cert, --key)",
    )
    p.add_argument("--cert", metavar="PATH", help="certificate chain for --tls files")
    p.add_argument("--key", metavar="PATH", help="private key for --tls files")
    p.add_argument(
        "--nameserver",
        action="append",
        metavar="ADDR",
        help='DNS server to use instead of "system" (repeatable)',
    )
    p.add_argument(
        "--bind",
        action="append",
        metavar="IP",
        help="listen on this address only, standard ports (repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="any other config value, e.g. --set delivery.smarthost=relay.example:587 (repeatable)",
    )
    p.add_argument(
        "--systemd", action="store_true", help=f"also write a hardened systemd unit ({DEFAULT_UNIT_PATH})"
    )
    p.add_argument("--systemd-unit", metavar="PATH", help="write the unit here instead (implies --systemd)")

    p = add(
        "check", cmd_check, "check the DNS records, reverse DNS and certificate against what mailroom needs"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--smtp-out", action="store_true", help="also test that outbound port 25 is reachable (5 s)"
    )
    p.add_argument(
        "--smtp-out-target",
        metavar="HOST:PORT",
        help="where --smtp-out connects (default: gmail.com's MX, port 25)",
    )
    p.add_argument(
        "--ca-file",
        action="append",
        metavar="PATH",
        help="also trust this CA for the certificate (a private CA)",
    )
    p.add_argument(
        "--records", action="store_true", help="print the records to publish instead of checking them"
    )
    p.add_argument(
        "--no-enforce",
        action="store_true",
        help="do not switch the MTA-STS policy to enforce, even when all is right",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mailroom.cli_quickstart ARGS`` = ``mailroom ARGS`` with init and check present
    whether or not cli.py registers them yet."""
    from mailroom import cli

    original = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = original()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) and "init" not in action.choices:
                register(action)
        return parser

    cli.build_parser = build
    try:
        return cli.main(argv)
    finally:
        cli.build_parser = original


if __name__ == "__main__":
    raise SystemExit(main())
