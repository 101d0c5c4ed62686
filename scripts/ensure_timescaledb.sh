#!/usr/bin/env bash
# Makes sure the machine's PostgreSQL binaries have the TimescaleDB extension installed (for
# `make test-timescaledb` and the benchmark's hypertable case, which start a throwaway server of their own
# with it preloaded; the machine's running server is never restarted). No package registry here carries
# TimescaleDB: when it is missing, it is built from source with the build script of TIMESCALEDB_SOURCE
# (default: ../shared/tools/timescaledb beside the checkout, else /work/shared/tools/timescaledb).
set -euo pipefail
pg_config=$(command -v pg_config || ls /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1)
if [[ -z "$pg_config" ]]; then
  echo "ensure_timescaledb.sh: no pg_config: install PostgreSQL (Debian: postgresql) first" >&2
  exit 1
fi
if [[ -f "$("$pg_config" --sharedir)/extension/timescaledb.control" ]]; then
  exit 0
fi
here=$(cd "$(dirname "$0")/.." && pwd)
for candidate in "${TIMESCALEDB_SOURCE:-}" "$here/../shared/tools/timescaledb" /work/shared/tools/timescaledb; do
  if [[ -n "$candidate" && -x "$candidate/build.sh" ]]; then
    echo "ensure_timescaledb.sh: building TimescaleDB with $candidate/build.sh (about 3 minutes)"
    exec "$candidate/build.sh" "$pg_config"
  fi
done
echo "ensure_timescaledb.sh: TimescaleDB is not installed for $("$pg_config" --version) and no source was found." >&2
echo "  Install it (https://docs.timescale.com/self-hosted/latest/install/), or set TIMESCALEDB_SOURCE to a folder" >&2
echo "  with build.sh and the source tarball (in this workplace: ../shared/tools/timescaledb)." >&2
exit 1
