#!/usr/bin/env bash
# make control-plane: Kubernetes' own kube-apiserver, kube-controller-manager and kubectl, and etcd,
# built from the Go module proxy into a cache outside the checkout (keyed by the release), so a
# second run takes a moment. The last line of output is `bin: <absolute directory>`; the real-cluster
# tests and `make cluster` rely on it.
#
# k8s.io/kubernetes publishes its go.mod with its staging modules (k8s.io/api, k8s.io/apiserver, ...)
# at v0.0.0, so a module of ours requires it at one release and replaces every such staging module
# with its published v0.X.Y of the same release (as rancher/fleet#4900 does). etcd is the release
# k8s.io/kubernetes itself requires, its own command (etcdmain) in a two-line main of ours.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
CACHE="${VMIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vector-migration}"
home="$CACHE/control-plane-v$K8S_VERSION"
staging="v0.${K8S_VERSION#1.}"
say() { printf '%s\n' "$*" >&2; }

if [ ! -x "$home/bin/kube-apiserver" ]; then
  started=$(date +%s)
  say "Kubernetes $K8S_VERSION and etcd from the Go module proxy, once (kept in $home)"
  rm -rf "$home.partial"
  mkdir -p "$home.partial/src/etcd"
  cd "$home.partial/src"
  export GOMODCACHE="$CACHE/go-tools/modcache" GOFLAGS="-modcacherw" GOTOOLCHAIN=local
  go mod init vmig.local/control-plane >/dev/null 2>&1
  kubernetes_mod=$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  etcd_version=$(awk '$1 == "go.etcd.io/etcd/server/v3" {print $2}' "$kubernetes_mod")
  # every staging module k8s.io/kubernetes names at v0.0.0, at this release's published version
  awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" {print $1}' "$kubernetes_mod" | while read -r module; do
    go mod edit -replace "$module=$module@$staging"
  done
  cat > etcd/main.go <<'EOF'
// etcd's own command, as the etcd release Kubernetes requires builds it.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  # the packages built, so go.sum covers everything they import
  go get "k8s.io/kubernetes/cmd/kube-apiserver@v$K8S_VERSION" "k8s.io/kubernetes/cmd/kube-controller-manager@v$K8S_VERSION" \
    "k8s.io/kubernetes/cmd/kubectl@v$K8S_VERSION" "go.etcd.io/etcd/server/v3/etcdmain@$etcd_version" 2>&1 | tail -n 5 >&2
  version="k8s.io/component-base/version"
  ldflags="-s -w -X $version.gitVersion=v$K8S_VERSION -X $version.gitMajor=1"
  ldflags="$ldflags -X $version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $version.gitTreeState=clean"
  ldflags="$ldflags -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
  for command in kube-apiserver kube-controller-manager kubectl; do
    say "  go build $command"
    go build -trimpath -ldflags "$ldflags" -o "$home.partial/bin/$command" "k8s.io/kubernetes/cmd/$command"
  done
  say "  go build etcd $etcd_version"
  go build -trimpath -ldflags "-s -w" -o "$home.partial/bin/etcd" ./etcd
  printf '%s\n' "$etcd_version" > "$home.partial/etcd-version"
  cd /
  rm -rf "$home" && mv "$home.partial" "$home"
  say "built in $(($(date +%s) - started)) s"
fi
printf 'bin: %s\n' "$home/bin"
