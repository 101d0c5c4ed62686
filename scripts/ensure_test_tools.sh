#!/usr/bin/env bash
# Installs the system tools `make test` needs but does not install itself (tests never install packages):
# Debian's pgbouncer, used by tests/integration/test_pgbouncer_integration.py, and Debian's chromium, driven
# through Playwright by tests/e2e/test_browser_e2e.py (Playwright's own browser downloads are not used).
# Idempotent and silent when everything is present (scripts/ensure_debian_packages.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
"$here/ensure_debian_packages.sh" ensure_test_tools.sh \
  "pgbouncer /usr/sbin/pgbouncer tests/integration/test_pgbouncer_integration.py" \
  "chromium /usr/bin/chromium tests/e2e/test_browser_e2e.py"
