#!/usr/bin/env bash
# Installs what `make image` and tests/integration/image use when it is missing (Debian packages):
# debootstrap (the base), buildah (builds the Dockerfile), containerd + runc (run the image; crun
# does not work with the hybrid cgroups of the CI VMs). Quiet and quick when all are there.
set -euo pipefail
[ "$(uname -s)" = Linux ] || exit 0
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v buildah >/dev/null || need+=(buildah)
command -v containerd >/dev/null && command -v ctr >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2> >(grep -v "^debconf: " >&2)
# The package starts a service where there is an init system; the tests start their own.
$SUDO systemctl disable --now containerd >/dev/null 2>&1 || true
command -v debootstrap >/dev/null && command -v buildah >/dev/null && command -v ctr >/dev/null \
  && command -v runc >/dev/null
