#!/usr/bin/env bash
# Installs what the server tests (tests/servers.py) need on a Debian machine, as root: PostgreSQL's binaries.
# Idempotent: does nothing but print versions when they are already there. The MLflow server comes with the
# Python dependencies; the PostgreSQL driver with `pip install -e '.[postgres]'`.
# The tests run their own throwaway cluster on a free loopback port with its own socket folder, so a cluster that
# the package creates (Debian's "main", port 5432) never matters to them; this script also keeps apt from starting
# it, and stops nothing that was already running.
set -euo pipefail

have_pg() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

if ! have_pg; then
    if [[ $(id -u) -ne 0 ]]; then
        echo "servers.sh: PostgreSQL is not installed; run this script as root to install it" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package's post-install from starting its cluster (the usual policy-rc.d switch), only if no policy
    # is in place already, and put things back however the install ends.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -q
    apt-get install -y -q --no-install-recommends postgresql
fi

have_pg || { echo "servers.sh: no /usr/lib/postgresql/*/bin/initdb after the install" >&2; exit 1; }
command -v runuser >/dev/null || { echo "servers.sh: runuser (util-linux) is missing" >&2; exit 1; }
getent passwd postgres >/dev/null || { echo "servers.sh: the package made no 'postgres' user" >&2; exit 1; }

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
echo "PostgreSQL: $("$bin/postgres" --version) ($bin)"
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
if [[ -x $python ]]; then
    "$python" - <<'EOF' || true
import importlib.metadata as md

for name in ("mlflow", "optuna", "sqlalchemy", "psycopg", "psycopg-binary"):
    try:
        print(f"{name}: {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name}: not installed" + (" (pip install -e '.[postgres]')" if name == "psycopg" else ""))
EOF
fi
