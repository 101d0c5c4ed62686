#!/usr/bin/env bash
# Installs the system tools the test suite needs but does not install itself (tests never install
# packages): Debian's pgbouncer, used by tests/test_pgbouncer_integration.py. Idempotent and silent when
# everything is present; `apt-get update` runs only when the package index does not know the package.
# Needs root (or sudo) only when something is missing.
set -euo pipefail

PGBOUNCER=/usr/sbin/pgbouncer

if [[ -x "$PGBOUNCER" ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "ensure_test_tools.sh: $PGBOUNCER is missing; run this script as root (or install sudo) to install pgbouncer" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_test_tools.sh: $PGBOUNCER is missing and there is no apt-get; install PgBouncer so that $PGBOUNCER exists" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "ensure_test_tools.sh: installing Debian's pgbouncer (for tests/test_pgbouncer_integration.py)"
if ! apt-cache show pgbouncer >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get update -qq
fi
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null

if [[ ! -x "$PGBOUNCER" ]]; then
  echo "ensure_test_tools.sh: apt-get install pgbouncer did not provide $PGBOUNCER" >&2
  exit 1
fi
echo "ensure_test_tools.sh: $("$PGBOUNCER" --version | head -1)"
