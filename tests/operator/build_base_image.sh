#!/usr/bin/env bash
# Make the local base image the image tests need (no registry is reachable here): a minimal
# Debian bookworm root from debootstrap, imported into podman as localhost/debian:bookworm-min.
#
#   apt-get install -y podman runc debootstrap && tests/operator/build_base_image.sh
#
# runc, not crun: crun refuses hybrid cgroup v1/v2 hosts. Idempotent.
set -euo pipefail
IMAGE=localhost/debian:bookworm-min
if podman image exists "$IMAGE"; then exit 0; fi
ROOTFS="${XDG_CACHE_HOME:-$HOME/.cache}/cello/rootfs/bookworm"
if [[ ! -x "$ROOTFS/bin/sh" ]]; then
  mkdir -p "$(dirname "$ROOTFS")"
  debootstrap --variant=minbase bookworm "$ROOTFS" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
fi
tar -C "$ROOTFS" -c . | podman import - "$IMAGE"
