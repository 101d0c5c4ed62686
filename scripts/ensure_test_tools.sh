#!/usr/bin/env bash
# Installs the system tools the test suite needs but does not install itself (tests never install
# packages): Debian's pgbouncer, used by tests/integration/test_pgbouncer_integration.py, and Debian's chromium, driven
# through Playwright by tests/e2e/test_browser_e2e.py (Playwright's own browser downloads are not used).
# Idempotent and silent when everything is present; `apt-get update` runs only when the package index does
# not know a missing package. Needs root (or sudo) only when something is missing.
set -euo pipefail

PGBOUNCER=/usr/sbin/pgbouncer
CHROMIUM=/usr/bin/chromium

# "package executable purpose" for each tool, installed only when its executable is missing.
TOOLS=(
  "pgbouncer $PGBOUNCER tests/integration/test_pgbouncer_integration.py"
  "chromium $CHROMIUM tests/e2e/test_browser_e2e.py"
)

missing=()
for tool in "${TOOLS[@]}"; do
  read -r package executable _ <<<"$tool"
  if [[ ! -x "$executable" ]]; then
    missing+=("$tool")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  for tool in "${missing[@]}"; do
    read -r package executable _ <<<"$tool"
    echo "ensure_test_tools.sh: $executable is missing; run this script as root (or install sudo) to install $package" >&2
  done
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  for tool in "${missing[@]}"; do
    read -r package executable _ <<<"$tool"
    echo "ensure_test_tools.sh: $executable is missing and there is no apt-get; install $package so that $executable exists" >&2
  done
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
updated=false
for tool in "${missing[@]}"; do
  read -r package executable purpose <<<"$tool"
  echo "ensure_test_tools.sh: installing Debian's $package (for $purpose)"
  if ! $updated && ! apt-cache show "$package" >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -qq
    updated=true
  fi
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$package" >/dev/null
  if [[ ! -x "$executable" ]]; then
    echo "ensure_test_tools.sh: apt-get install $package did not provide $executable" >&2
    exit 1
  fi
  echo "ensure_test_tools.sh: $("$executable" --version 2>/dev/null | head -1)"
done
