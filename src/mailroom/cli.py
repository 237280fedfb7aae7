"""The ``mailroom`` command: serve, and the admin commands that are safe while the server runs.

Errors are one line on stderr and a non-zero exit (2 for configuration and usage, 1 for the rest);
users never see a traceback (set MAILROOM_DEBUG=1 to get one).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from mailroom import __version__, cli_auth, cli_quickstart
from mailroom import config as configmod
from mailroom.address import AddressError
from mailroom.app import ServerLock, StartupError, drop_privileges, resolve_user, serve, server_running
from mailroom.config import Config, ConfigError
from mailroom.store import directory
from mailroom.store.database import (
    StoreError,
    check_version,
    connect,
    create_private,
    db_path,
    migrate,
    open_database,
    transaction,
)
from mailroom.store.schema import SCHEMA_VERSION


class UsageError(Exception):
    pass


def _load(args: argparse.Namespace) -> tuple[Config, Path | None]:
    path = configmod.locate(args.config)
    cfg = configmod.dev_defaults() if path is None else configmod.load_file(path)
    return cfg, path


def _admin_db(args: argparse.Namespace) -> sqlite3.Connection:
    """Open the database as the server would: as [server] user when started as root."""
    cfg, _ = _load(args)
    drop_privileges(resolve_user(cfg))
    data_dir = cfg.data_path
    if not db_path(data_dir).exists():
        if cfg.dev:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        elif not data_dir.is_dir():
            raise StoreError(
                f"server.data_dir: {data_dir} does not exist (start the server once, or create it)"
            )
    return open_database(data_dir)


def _read_password(args: argparse.Namespace, prompt: str) -> str:
    if getattr(args, "password_stdin", False):
        line = sys.stdin.readline()
        password = line.rstrip("\r\n")
        if not password:
            raise UsageError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for a password: use --password-stdin")
    first = getpass.getpass(prompt)
    if getpass.getpass("Again: ") != first:
        raise UsageError("the passwords did not match")
    return first


# --- commands -----------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    cfg, path = _load(args)
    return serve(cfg, path)


def cmd_config_example(args: argparse.Namespace) -> int:
    sys.stdout.write(configmod.example())
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = Path(args.path) if args.path else configmod.locate(args.config)
    if path is None:
        print(
            "no config file (none given, CONFIG_PATH unset, /etc/mailroom/mailroom.toml absent): dev defaults apply"
        )
        return 0
    configmod.load_file(path)
    print(f"{path}: ok")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    cfg, _ = _load(args)
    drop_privileges(resolve_user(cfg))
    cfg.data_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = db_path(cfg.data_path)
    conn = connect(path)
    try:
        applied = migrate(conn, path)
    finally:
        conn.close()
    print(
        f"applied migrations {', '.join(map(str, applied))}"
        if applied
        else f"schema is current (version {SCHEMA_VERSION})"
    )
    return 0


def cmd_domain_add(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    with transaction(conn):
        domain = directory.add_domain(conn, args.name, args.postmaster)
    print(f"added domain {domain.name}")
    return 0


def cmd_domain_list(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    for domain in directory.list_domains(conn):
        print(f"{domain.name}\tpostmaster={domain.postmaster or '(first account)'}")
    return 0


def cmd_domain_remove(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    with transaction(conn):
        directory.remove_domain(conn, args.name)
    print(f"removed domain {args.name}")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    generated = args.generate_password
    password = directory_password(args, generated)
    with transaction(conn):
        account = directory.add_account(conn, args.address, password)
    print(f"added account {account.address}")
    if generated:
        print(f"password: {password}")
    return 0


def directory_password(args: argparse.Namespace, generated: bool) -> str:
    from mailroom.passwords import generate_password

    return generate_password() if generated else _read_password(args, f"Password for {args.address}: ")


def cmd_user_list(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    for account in directory.list_accounts(conn):
        print(account.address + ("\t(disabled)" if account.disabled else ""))
    return 0


def cmd_user_passwd(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    if directory.find_account(conn, args.address) is None:
        raise StoreError(f"no such account: {args.address}")
    generated = args.generate_password
    password = directory_password(args, generated)
    with transaction(conn):
        directory.set_password(conn, args.address, password)
    print(f"password changed for {args.address}")
    if generated:
        print(f"password: {password}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    with transaction(conn):
        directory.remove_account(conn, args.address)
    print(f"removed account {args.address} and its mail")
    return 0


def cmd_alias_add(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    with transaction(conn):
        alias = directory.add_alias(conn, args.source, args.targets)
    print(f"{alias.address} -> {', '.join(alias.targets)}")
    return 0


def cmd_alias_list(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    for alias in directory.list_aliases(conn):
        print(f"{alias.address}\t{', '.join(alias.targets)}")
    return 0


def cmd_alias_remove(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    with transaction(conn):
        directory.remove_alias(conn, args.source, args.targets)
    print(f"removed {args.source}" + (f" -> {', '.join(args.targets)}" if args.targets else ""))
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    conn = _admin_db(args)
    target = Path(args.path)
    if target.exists() and not args.force:
        raise UsageError(f"{target} exists; use --force to overwrite it")
    tmp = target.with_name(target.name + ".partial")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the backup holds password hashes
    os.close(fd)
    dest = sqlite3.connect(tmp)
    try:
        conn.backup(dest)  # SQLite online backup: a consistent snapshot while the server runs
        dest.execute("PRAGMA journal_mode = DELETE")
        if dest.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
            raise StoreError("the backup copy failed its integrity check")
    finally:
        dest.close()
    os.replace(tmp, target)
    print(f"backup written to {target} ({target.stat().st_size} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    cfg, _ = _load(args)
    drop_privileges(resolve_user(cfg))
    source = Path(args.path)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    data_dir = cfg.data_path
    if data_dir.is_dir() and server_running(data_dir):
        raise UsageError(f"a mailroom server is running on {data_dir}; stop it before restoring")
    src = connect(source, readonly=True)
    try:
        try:
            ok = src.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{source}: not a SQLite database ({exc})") from None
        if not ok:
            raise StoreError(f"{source}: fails its integrity check; not restoring it")
        check_version(src, source)
        if not src.execute("SELECT 1 FROM sqlite_master WHERE name = 'domains'").fetchone():
            raise StoreError(f"{source}: not a mailroom backup")
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = ServerLock(data_dir)
        if not lock.acquire():
            raise UsageError(f"a mailroom server is running on {data_dir}; stop it before restoring")
        try:
            current = db_path(data_dir)
            if current.exists():
                keep = current.with_name(f"{current.name}.before-restore-{time.strftime('%Y%m%dT%H%M%S')}")
                old = connect(current)
                try:
                    create_private(keep)  # mail and password hashes: 0600 like the database
                    old.execute("VACUUM INTO ?", (str(keep),))
                finally:
                    old.close()
                print(f"previous database kept as {keep}")
            dest = connect(current)
            try:
                src.backup(dest)
                migrate(dest, current)
            finally:
                dest.close()
        finally:
            lock.release()
    finally:
        src.close()
    print(f"restored {source} into {db_path(data_dir)}")
    return 0


def cmd_cert_status(args: argparse.Namespace) -> int:
    from mailroom.acme.status import CertStatusError, status_lines

    cfg, _ = _load(args)
    try:
        print("\n".join(status_lines(cfg)))
    except CertStatusError as exc:
        print(f"mailroom: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_cert_renew(args: argparse.Namespace) -> int:
    from mailroom.acme.status import CertStatusError, request_renewal

    cfg, _ = _load(args)
    drop_privileges(resolve_user(cfg))
    pid = None
    if server_running(cfg.data_path):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((cfg.data_path / "mailroom.lock").read_text().split()[0])
    try:
        print(request_renewal(cfg, pid))
    except CertStatusError as exc:
        print(f"mailroom: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_queue_list(args: argparse.Namespace) -> int:
    from mailroom.store.queue import list_queue

    conn = _admin_db(args)
    entries = list_queue(conn)
    for e in entries:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.next_attempt))
        print(
            f"{e.queue_id}\t<{e.sender}>\t{e.address}\t{e.state}\tattempts={e.attempts}\tnext={when}Z\t{e.last_reply or ''}"
        )
    if not entries:
        print("queue is empty")
    return 0


def cmd_queue_retry(args: argparse.Namespace) -> int:
    from mailroom.store.queue import retry_now

    conn = _admin_db(args)
    with transaction(conn):
        count = retry_now(conn, int(time.time()), args.id)
    print(f"{count} recipient(s) due now (a running server picks them up within a minute)")
    return 0


def cmd_queue_show(args: argparse.Namespace) -> int:
    from mailroom.store.queue import list_queue, queued_headers

    conn = _admin_db(args)
    headers = queued_headers(conn, args.id)
    if headers is None:
        raise StoreError(f"no queued message {args.id}")
    for e in list_queue(conn):
        if e.queue_id == args.id:
            print(
                f"recipient {e.address}: {e.state}, attempts={e.attempts}, last reply: {e.last_reply or '-'}"
            )
    sys.stdout.write(headers.decode("utf-8", "replace"))
    return 0


def cmd_queue_delete(args: argparse.Namespace) -> int:
    from mailroom.store.queue import delete_message

    conn = _admin_db(args)
    with transaction(conn):
        if not delete_message(conn, args.id):
            raise StoreError(f"no queued message {args.id}")
    print(f"deleted queued message {args.id} (no bounce sent)")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"mailroom {__version__} (schema {SCHEMA_VERSION})")
    return 0


# --- argument parsing ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="config file (default: $CONFIG_PATH, else /etc/mailroom/mailroom.toml, else dev defaults)",
    )
    parser = argparse.ArgumentParser(
        prog="mailroom", description="A self-contained mail server.", parents=[common]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        parent: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        fn: Callable[[argparse.Namespace], int],
        help: str,
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, parents=[common], description=help)
        p.set_defaults(func=fn)
        return p

    add(sub, "serve", cmd_serve, "run the server")
    add(sub, "version", cmd_version, "print the version")
    add(sub, "migrate", cmd_migrate, "apply pending database migrations")
    p = add(sub, "backup", cmd_backup, "write a consistent copy of the database (safe while serving)")
    p.add_argument("path")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p = add(sub, "restore", cmd_restore, "replace the database with a backup (server stopped)")
    p.add_argument("path")

    cfg = sub.add_parser("config", help="print or check configuration").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    add(cfg, "example", cmd_config_example, "print a complete, commented sample config")
    p = add(cfg, "check", cmd_config_check, "validate a config file")
    p.add_argument("path", nargs="?")

    crt = sub.add_parser("cert", help="the TLS certificate").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    add(crt, "status", cmd_cert_status, "show the certificate, its issuer, expiry and the next renewal")
    add(crt, "renew", cmd_cert_renew, 'renew the ACME certificate now (tls.mode = "acme")')

    dom = sub.add_parser("domain", help="local domains").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(dom, "add", cmd_domain_add, "add a local domain")
    p.add_argument("name")
    p.add_argument(
        "--postmaster",
        metavar="ADDR",
        help="where postmaster@ and abuse@ deliver (default: the first account)",
    )
    add(dom, "list", cmd_domain_list, "list local domains")
    p = add(dom, "remove", cmd_domain_remove, "remove a domain nothing references any more")
    p.add_argument("name")

    usr = sub.add_parser("user", help="accounts").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    for name, fn, help in (
        ("add", cmd_user_add, "add an account"),
        ("passwd", cmd_user_passwd, "set an account's password"),
    ):
        p = add(usr, name, fn, help)
        p.add_argument("address")
        how = p.add_mutually_exclusive_group()
        how.add_argument(
            "--password-stdin", action="store_true", help="read the password from the first line of stdin"
        )
        how.add_argument(
            "--generate-password", action="store_true", help="make a random password and print it once"
        )
    add(usr, "list", cmd_user_list, "list accounts")
    p = add(usr, "remove", cmd_user_remove, "remove an account and all its mail")
    p.add_argument("address")

    als = sub.add_parser("alias", help="aliases and catch-alls").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(
        als,
        "add",
        cmd_alias_add,
        "add an alias (SOURCE user@domain, or @domain for a catch-all) to one or more targets",
    )
    p.add_argument("source")
    p.add_argument("targets", nargs="+")
    add(als, "list", cmd_alias_list, "list aliases")
    p = add(als, "remove", cmd_alias_remove, "remove an alias, or only some of its targets")
    p.add_argument("source")
    p.add_argument("targets", nargs="*")
    que = sub.add_parser("queue", help="the outbound queue").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    add(que, "list", cmd_queue_list, "list queued recipients with their state and last reply")
    p = add(que, "retry", cmd_queue_retry, "make deferred recipients (of one message, or all) due now")
    p.add_argument("id", type=int, nargs="?")
    p = add(que, "show", cmd_queue_show, "a queued message's recipients and headers")
    p.add_argument("id", type=int)
    p = add(que, "delete", cmd_queue_delete, "drop a queued message without a bounce")
    p.add_argument("id", type=int)

    cli_auth.register(sub)
    cli_quickstart.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ConfigError as exc:
        prefix = f"{exc.path}: " if exc.path else ""
        print(f"mailroom: config error: {prefix}{exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"mailroom: {exc}", file=sys.stderr)
        return 2
    except (StoreError, StartupError, AddressError, ValueError) as exc:
        print(f"mailroom: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last line of defence: one line, no traceback
        if os.environ.get("MAILROOM_DEBUG"):
            traceback.print_exc()
        print(
            f"mailroom: internal error: {type(exc).__name__}: {exc} (set MAILROOM_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
