#!/usr/bin/env bash
# Build etcd, kube-apiserver and kube-controller-manager from the Go module proxy into a cache
# folder keyed by version; print that folder. Does nothing when the binaries are already there.
# KUBEBUILDER_ASSETS (the envtest convention), when set, names a folder with these binaries and
# is used instead. Only go.mod/go.sum live in this repository; no Kubernetes source.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=(etcd kube-apiserver kube-controller-manager)

if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  for b in "${need[@]}"; do
    [[ -x "$KUBEBUILDER_ASSETS/$b" ]] || { echo "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS has no $b" >&2; exit 1; }
  done
  echo "$KUBEBUILDER_ASSETS"; exit 0
fi

kv=$(awk '$1=="k8s.io/kubernetes"{print $2} $1=="require" && $2=="k8s.io/kubernetes"{print $3}' "$here/kube/go.mod")
ev=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2} $1=="require" && $2=="go.etcd.io/etcd/server/v3"{print $3}' "$here/etcd/go.mod")
[[ -n "$kv" && -n "$ev" ]] || { echo "cannot read versions from tools/*/go.mod" >&2; exit 1; }
out="${CONVEYOR_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/conveyor/kube}/k8s-$kv-etcd-$ev"

missing=()
for b in "${need[@]}"; do [[ -x "$out/$b" ]] || missing+=("$b"); done
if [[ ${#missing[@]} -eq 0 ]]; then echo "$out"; exit 0; fi

mkdir -p "$out"
export CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly" GOTOOLCHAIN=local
minor=${kv#v1.}; minor=${minor%%.*}
ldf="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldf+=" -X $pkg.gitVersion=$kv -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
done
ldf+=" -X k8s.io/component-base/version.gitTreeState=clean"
start=$(date +%s)
if [[ ! -x "$out/etcd" ]]; then
  echo "building etcd $ev (first time only) ..." >&2
  (cd "$here/etcd" && go build -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3 && mv "$out/etcd.tmp" "$out/etcd")
fi
for b in kube-apiserver kube-controller-manager; do
  if [[ ! -x "$out/$b" ]]; then
    echo "building $b $kv (first time only; about 10-20 min cold on 2 cores) ..." >&2
    (cd "$here/kube" && go build -ldflags "$ldf" -o "$out/$b.tmp" "k8s.io/kubernetes/cmd/$b" && mv "$out/$b.tmp" "$out/$b")
  fi
done
echo "built in $(( $(date +%s) - start )) s" >&2
echo "$out"
