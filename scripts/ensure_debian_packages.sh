#!/usr/bin/env bash
# Installs the Debian packages a test suite needs but does not install itself, each only when the file it
# provides is missing. Used by ensure_test_tools.sh and ensure_compose_tools.sh.
#   ensure_debian_packages.sh CALLER "package file purpose" ...
# Idempotent and silent when everything is present; `apt-get update` runs only when the package index does
# not know a missing package; one `apt-get install --no-install-recommends` for all of them. Needs root (or
# sudo) only when something is missing.
set -euo pipefail
caller=$1
shift

missing=()
for tool in "$@"; do
  read -r package file _ <<<"$tool"
  if [[ ! -e "$file" ]]; then
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
    read -r package file _ <<<"$tool"
    echo "$caller: $file is missing; run this script as root (or install sudo) to install $package" >&2
  done
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  for tool in "${missing[@]}"; do
    read -r package file _ <<<"$tool"
    echo "$caller: $file is missing and there is no apt-get; install $package so that $file exists" >&2
  done
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=()
updated=false
for tool in "${missing[@]}"; do
  read -r package _ purpose <<<"$tool"
  echo "$caller: installing Debian's $package (for ${purpose//-/ })"
  if ! $updated && ! apt-cache show "$package" >/dev/null 2>&1; then
    "${SUDO[@]}" apt-get update -qq || true # an unreachable third-party source must not stop Debian's
    updated=true
  fi
  packages+=("$package")
done
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
for tool in "${missing[@]}"; do
  read -r package file _ <<<"$tool"
  if [[ ! -e "$file" ]]; then
    echo "$caller: apt-get install $package did not provide $file" >&2
    exit 1
  fi
done
