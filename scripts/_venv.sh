# Sourced by scripts/serve and scripts/test: make ./.venv on a fresh Debian machine and install
# mailroom into it (with the extras named in $MAILROOM_EXTRAS). Debian's pip refuses the system
# interpreter (PEP 668), hence the venv; python3-venv comes from apt when it is missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "[setup] apt: installing ${missing[*]}" >&2
    if ! apt-cache policy "${missing[0]}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        as_root apt-get update -q >/dev/null
    fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

if ! command -v "$PY" >/dev/null; then
    echo "[setup] $PY not found: install Python 3.11 or newer" >&2; exit 1
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "[setup] mailroom needs Python >= 3.11" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv --help >/dev/null 2>&1 || ! "$PY" -c 'import ensurepip' 2>/dev/null; then
        ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt_install "python${ver}-venv" || apt_install python3-venv
    fi
    rm -rf .venv
    "$PY" -m venv .venv
fi

# reinstall only when pyproject.toml or the extras changed
stamp=".venv/.mailroom-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) ${MAILROOM_EXTRAS:-}"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[setup] installing mailroom${MAILROOM_EXTRAS:+[$MAILROOM_EXTRAS]} into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v 'is ignored: it is neither' || true
    .venv/bin/python -m pip install -q -e ".${MAILROOM_EXTRAS:+[$MAILROOM_EXTRAS]}" 2>&1 | grep -v 'is ignored: it is neither' || true
    .venv/bin/python -c 'import mailroom' || { echo "[setup] installing mailroom failed" >&2; exit 1; }
    echo "$want" > "$stamp"
fi
