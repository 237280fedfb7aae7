"""A hardened systemd unit for ``mailroom serve`` (``mailroom init --systemd``).

The server runs as ``[server] user`` from the first instruction: systemd hands it only
CAP_NET_BIND_SERVICE for ports below 1024, so it never holds root. The file system is read-only
except data_dir (ProtectSystem=strict + ReadWritePaths), and the usual sandboxing applies
(see systemd.exec(5); ``systemd-analyze security mailroom`` rates it).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from mailroom.config import Config

DEFAULT_UNIT_PATH = Path("/etc/systemd/system/mailroom.service")


def unit_text(cfg: Config, config_path: Path, user: str | None, python: str | None = None) -> str:
    python = python or sys.executable
    exec_start = shlex.join([python, "-m", "mailroom", "--config", str(config_path), "serve"])
    data_dir = str(cfg.data_path)
    # A Python installed under /home or /root must stay readable: ProtectHome=read-only then.
    under_home = python.startswith(("/home/", "/root/"))
    extra_paths = [p for p in (cfg.tls.cert, cfg.tls.key) if cfg.tls.mode == "files" and p]
    lines = [
        "# mailroom mail server (written by `mailroom init`).",
        f"# Install: systemctl daemon-reload && systemctl enable --now {DEFAULT_UNIT_PATH.stem}",
        "[Unit]",
        "Description=mailroom mail server (SMTP, submission, IMAP, POP3, HTTPS)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={exec_start}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5s",
        "TimeoutStopSec=30s",
    ]
    if user:
        lines += [f"User={user}", f"Group={user}"]
    lines += [
        "# Ports 25, 80, 110, 143, 443, 465, 587, 993, 995 without root:",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "NoNewPrivileges=true",
        "# Read-only everywhere but data_dir:",
        "ProtectSystem=strict",
        f"ReadWritePaths={data_dir}",
    ]
    if extra_paths:
        lines.append("ReadOnlyPaths=" + " ".join(extra_paths))
    lines += [
        f"ProtectHome={'read-only' if under_home else 'true'}",
        "PrivateTmp=true",
        "PrivateDevices=true",
        "ProtectKernelTunables=true",
        "ProtectKernelModules=true",
        "ProtectKernelLogs=true",
        "ProtectControlGroups=true",
        "ProtectClock=true",
        "ProtectHostname=true",
        "ProtectProc=invisible",
        "ProcSubset=pid",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces=true",
        "RestrictRealtime=true",
        "RestrictSUIDSGID=true",
        "LockPersonality=true",
        "# No MemoryDenyWriteExecute: cffi callbacks (argon2-cffi) need writable+executable pages.",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallErrorNumber=EPERM",
        "UMask=0077",
        "LimitNOFILE=65536",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
