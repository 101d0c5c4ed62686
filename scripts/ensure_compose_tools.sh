#!/usr/bin/env bash
# Installs what `make test-compose` (tests/compose) needs but does not install itself: Debian's podman with
# runc (Debian's default runtime crun fails on this kind of machine; tests/compose/containers.conf selects
# runc), netavark with aardvark-dns (container networks that resolve service names) and iptables (published
# ports), debootstrap (the stand-in base image is a Debian bookworm minbase tree), and podman-compose from
# PyPI at a pinned version in its own tool venv, .tools/podman-compose/ (the release whose `up --no-deps
# --scale` and `down -v --remove-orphans` the test's harness was written against; Debian's podman-compose
# 1.0.3, from 2021, was not tried). Idempotent and silent when everything is present;
# `apt-get update` runs only when the package index does not know a missing package. Needs root (or sudo)
# only when a Debian package is missing.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PODMAN_COMPOSE_VERSION=1.6.0
PODMAN_COMPOSE_VENV=$REPO/.tools/podman-compose
PODMAN_COMPOSE=$PODMAN_COMPOSE_VENV/bin/podman-compose

# "package file purpose" for each Debian package, installed only when its file is missing.
TOOLS=(
  "podman /usr/bin/podman containers"
  "runc /usr/sbin/runc the-container-runtime"
  "netavark /usr/lib/podman/netavark container-networks"
  "aardvark-dns /usr/lib/podman/aardvark-dns service-names-in-container-networks"
  "iptables /usr/sbin/iptables published-ports"
  "debootstrap /usr/sbin/debootstrap the-stand-in-base-image"
)

missing=()
for tool in "${TOOLS[@]}"; do
  read -r package file _ <<<"$tool"
  if [[ ! -e "$file" ]]; then
    missing+=("$tool")
  fi
done

if [[ ${#missing[@]} -gt 0 ]]; then
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    for tool in "${missing[@]}"; do
      read -r package file _ <<<"$tool"
      echo "ensure_compose_tools.sh: $file is missing; run this script as root (or install sudo) to install $package" >&2
    done
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    for tool in "${missing[@]}"; do
      read -r package file _ <<<"$tool"
      echo "ensure_compose_tools.sh: $file is missing and there is no apt-get; install $package so that $file exists" >&2
    done
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  packages=()
  updated=false
  for tool in "${missing[@]}"; do
    read -r package _ purpose <<<"$tool"
    echo "ensure_compose_tools.sh: installing Debian's $package (${purpose//-/ })"
    if ! $updated && ! apt-cache show "$package" >/dev/null 2>&1; then
      "${SUDO[@]}" apt-get update -qq || true # an unreachable third-party source must not stop Debian's
      updated=true
    fi
    packages+=("$package")
  done
  # One transaction, without recommends: podman's recommends pull in systemd's user session, buildah and
  # fuse-overlayfs, none of which the test uses.
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  for tool in "${missing[@]}"; do
    read -r package file _ <<<"$tool"
    if [[ ! -e "$file" ]]; then
      echo "ensure_compose_tools.sh: apt-get install $package did not provide $file" >&2
      exit 1
    fi
  done
  echo "ensure_compose_tools.sh: $(podman --version), $(runc --version | head -1)"
fi

if [[ ! -x "$PODMAN_COMPOSE" ]] || [[ "$("$PODMAN_COMPOSE_VENV/bin/python" -c \
  'import importlib.metadata as m; print(m.version("podman-compose"))' 2>/dev/null)" != "$PODMAN_COMPOSE_VERSION" ]]; then
  echo "ensure_compose_tools.sh: installing podman-compose $PODMAN_COMPOSE_VERSION (PyPI) into ${PODMAN_COMPOSE_VENV#"$REPO"/}"
  python3 -m venv --clear "$PODMAN_COMPOSE_VENV"
  "$PODMAN_COMPOSE_VENV/bin/pip" install --quiet --disable-pip-version-check "podman-compose==$PODMAN_COMPOSE_VERSION"
  if [[ ! -x "$PODMAN_COMPOSE" ]]; then
    echo "ensure_compose_tools.sh: pip install podman-compose==$PODMAN_COMPOSE_VERSION did not provide $PODMAN_COMPOSE" >&2
    exit 1
  fi
fi
