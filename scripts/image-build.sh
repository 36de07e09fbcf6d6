#!/usr/bin/env bash
# `make image`: build the Dockerfile with no registry: its BASE is Debian bookworm's python3.11 made
# here by debootstrap and committed into buildah's storage; the image is then written as a
# docker-archive that `ctr image import` (tests/integration/image) or `docker load` reads.
# The base tarball and buildah's storage (with its layer cache) live in ~/.cache/conveyor/image,
# so only the first build on a machine runs debootstrap and pip. Needs root (debootstrap, buildah).
#   IMAGE=localhost/conveyor:dev   the tag built
#   CONVEYOR_IMAGE_CACHE=...       the cache folder;  DEBIAN_MIRROR=...  the Debian mirror
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${CONVEYOR_IMAGE_CACHE:-$HOME/.cache/conveyor/image}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
IMAGE=${IMAGE:-localhost/conveyor:dev}
SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
# The base's key: change PACKAGES (or this script's base recipe, v1) and a new base is made.
KEY=$(printf '%s %s v1' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
BASE=localhost/conveyor-base:$SUITE-$KEY
BASE_TAR=$CACHE/base-$SUITE-$KEY.tar
ARCHIVE=$CACHE/conveyor.tar
mkdir -p "$CACHE"
# buildah's run state (mounts, locks) belongs with its storage: one run root per cache folder
RUNROOT=/run/conveyor-image-$(printf '%s' "$CACHE" | sha256sum | cut -c1-12)
# The build needs no container network (isolation chroot, the host's network): naming a backend
# keeps buildah from wanting netavark, which Debian's buildah only recommends.
export CONTAINERS_CONF=$CACHE/containers.conf
printf '[network]\nnetwork_backend = "cni"\n' >"$CONTAINERS_CONF"
bah() { buildah --root "$CACHE/storage" --runroot "$RUNROOT" --storage-driver overlay "$@"; }
# One build at a time per cache folder (two `make test` on a machine share ~/.cache).
exec 9>"$CACHE/.lock"
flock 9

make_base_tar() {
  local root
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' RETURN
  echo "image: debootstrap $SUITE ($PACKAGES) from $MIRROR, once per machine"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log"
  # What a container never needs: downloaded .debs, apt's lists, docs, logs, this machine's id.
  rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/* "$root"/dev/* "$root"/proc/*
  : >"$root/etc/machine-id"
  tar --numeric-owner --sort=name -C "$root" -cf "$BASE_TAR.part" .
  mv "$BASE_TAR.part" "$BASE_TAR"
}

if ! bah inspect --type image "$BASE" >/dev/null 2>&1; then
  [ -f "$BASE_TAR" ] || make_base_tar
  ctr=$(bah from scratch)
  bah add "$ctr" "$BASE_TAR" / >/dev/null
  bah config --env LANG=C.UTF-8 --cmd '["python3"]' "$ctr"
  bah commit -q --rm "$ctr" "$BASE" >/dev/null
fi
# pip inside the build trusts what pip here trusts (a TLS-inspecting proxy's CA), as a build secret
secret=()
[ -s "${PIP_CERT:-}" ] && secret=(--secret "id=pip-ca,src=$PIP_CERT")
start=$(date +%s)
# --force-rm: a failed step leaves no working container (and its mount) behind
bah bud --layers --force-rm --isolation chroot --network host "${secret[@]}" --build-arg "BASE=$BASE" -t "$IMAGE" .
built=$(date +%s)
# written aside, checked whole, then moved: a reader never sees a half-written archive
rm -f "$ARCHIVE.part"
bah push -q "$IMAGE" "docker-archive:$ARCHIVE.part:$IMAGE" >/dev/null
tar -tf "$ARCHIVE.part" manifest.json >/dev/null
mv "$ARCHIVE.part" "$ARCHIVE"
echo "image: $IMAGE ($(bah images --format '{{.Size}}' "$IMAGE")) built in $((built - start))s," \
  "archived in $(($(date +%s) - built))s (base $BASE): $ARCHIVE ($(du -m "$ARCHIVE" | cut -f1) MB)"
