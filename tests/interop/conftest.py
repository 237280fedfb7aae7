from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import IN_CI, PEERS, require_path


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed (CI=true: scripts/test should have installed it)")
        pytest.skip(f"{name} not installed")
    return path


def start_peer(script: str) -> None:
    """Run one of ../shared/peers/start-*.sh (installs with apt when missing)."""
    require_path(PEERS / script, "shared peer scripts")
    result = subprocess.run(["bash", str(PEERS / script)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        msg = f"{script} failed: {result.stderr[-2000:]}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


def ensure_knot() -> None:
    """Start Knot (../shared/peers/start-dns.sh) only when it is not answering yet: running the
    script again reloads the zones and drops records other tests added by dynamic update."""
    import dns.message
    import dns.query
    import dns.rcode

    try:
        reply = dns.query.udp(dns.message.make_query("peer.test", "SOA"), "127.0.0.1", port=5353, timeout=1.0)
        if reply.rcode() == dns.rcode.NOERROR and reply.answer:
            return
    except Exception:
        pass
    start_peer("start-dns.sh")
