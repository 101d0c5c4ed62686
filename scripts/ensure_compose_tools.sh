#!/usr/bin/env bash
# Installs what `make test-compose` (tests/compose) needs but does not install itself: Debian's podman with
# runc (Debian's default runtime crun fails on this kind of machine; tests/compose/containers.conf selects
# runc), netavark with aardvark-dns (container networks that resolve service names) and iptables (published
# ports), debootstrap (the stand-in base image is a Debian bookworm minbase tree), and podman-compose from
# PyPI at a pinned version in its own tool venv, .tools/podman-compose/ (the release whose `up --no-deps
# --scale` and `down -v --remove-orphans` the test's harness was written against; Debian's podman-compose
# 1.0.3, from 2021, was not tried). Idempotent and silent when everything is present
# (scripts/ensure_debian_packages.sh). Needs root (or sudo) only when a Debian package is missing.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PODMAN_COMPOSE_VERSION=1.6.0
PODMAN_COMPOSE_VENV=$REPO/.tools/podman-compose
PODMAN_COMPOSE=$PODMAN_COMPOSE_VENV/bin/podman-compose

# "package file purpose" for each Debian package, installed only when its file is missing; one transaction
# without recommends: podman's recommends pull in systemd's user session, buildah and fuse-overlayfs, none of
# which the test uses.
"$REPO/scripts/ensure_debian_packages.sh" ensure_compose_tools.sh \
  "podman /usr/bin/podman containers" \
  "runc /usr/sbin/runc the-container-runtime" \
  "netavark /usr/lib/podman/netavark container-networks" \
  "aardvark-dns /usr/lib/podman/aardvark-dns service-names-in-container-networks" \
  "iptables /usr/sbin/iptables published-ports" \
  "debootstrap /usr/sbin/debootstrap the-stand-in-base-image"

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
