#!/usr/bin/env bash
# Builds the tools the e2e tests need into ${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}/bin:
#   opsplane-e2e-harness  etcd + kube-apiserver test server (from e2e/harness)
#   helm                  helm.sh/helm/v3/cmd/helm at HELM_VERSION, built from source
#   kubectl               k8s.io/kubernetes/cmd/kubectl at the harness's k8s.io/kubernetes version,
#                         built from the Go modules with the harness's staging replaces
# Each tool is rebuilt only when its stamp (next to the binary) changed or the
# binary is missing, so a second run is a no-op.
# Uses the default GOCACHE/GOMODCACHE (outside the repo) and the Go module proxy.
set -euo pipefail

HELM_VERSION="v3.22.0"

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "${script_dir}/.." && pwd)"
harness_src="${repo_root}/e2e/harness"
cache_dir="${OPSPLANE_CACHE:-/var/tmp/opsplane-cache}"
bin_dir="${cache_dir}/bin"

log() { printf '[build-e2e-tools] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "'go' not found in PATH; install Go >= 1.26 (the harness needs it to build k8s.io/kubernetes)"
[ -f "${harness_src}/go.mod" ] || die "harness sources not found at ${harness_src}"
mkdir -p "${bin_dir}"

# Serialize concurrent runs (e.g. parallel test setups) on the same cache dir.
if command -v flock >/dev/null 2>&1; then
	exec 9>"${cache_dir}/.build-e2e-tools.lock"
	flock 9
fi

# Prints a build duration in seconds.
elapsed() { echo $(( $(date +%s) - $1 )); }

# Stamp of the harness: the Go version plus sha256 of go.mod, go.sum and all .go files.
harness_stamp() {
	(
		cd "${harness_src}"
		go env GOVERSION
		harness_ldflags
		find . -name '*.go' -o -name go.mod -o -name go.sum | LC_ALL=C sort | xargs sha256sum
	) | sha256sum | cut -d' ' -f1
}

# The k8s.io/kubernetes version the harness pins, e.g. v1.37.2.
kube_version() {
	awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "${harness_src}/go.mod"
}

harness_ldflags() {
	local v major minor pkg flags=""
	v="$(kube_version)"
	major="${v#v}"; major="${major%%.*}"
	minor="${v#v*.}"; minor="${minor%%.*}"
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		flags="${flags} -X ${pkg}.gitVersion=${v} -X ${pkg}.gitMajor=${major} -X ${pkg}.gitMinor=${minor} -X ${pkg}.gitTreeState=clean"
	done
	printf '%s' "${flags# }"
}

build_harness() {
	local bin="${bin_dir}/opsplane-e2e-harness" stamp_file="${bin_dir}/opsplane-e2e-harness.stamp" stamp t0
	stamp="$(harness_stamp)"
	if [ -x "${bin}" ] && [ -f "${stamp_file}" ] && [ "$(cat "${stamp_file}")" = "${stamp}" ]; then
		log "opsplane-e2e-harness: up to date (${bin})"
		return
	fi
	log "opsplane-e2e-harness: building from ${harness_src} (k8s.io/kubernetes is large: a cold build takes minutes)"
	t0=$(date +%s)
	rm -f "${stamp_file}"
	# Without these linker flags kube-apiserver reports v0.0.0-master, and tools that check the
	# server version (helm's kubeVersion constraint) refuse it.
	(cd "${harness_src}" && go build -trimpath -ldflags "$(harness_ldflags)" -o "${bin}.tmp" .) || die "building opsplane-e2e-harness failed"
	mv -f "${bin}.tmp" "${bin}"
	printf '%s\n' "${stamp}" >"${stamp_file}"
	log "opsplane-e2e-harness: built in $(elapsed "${t0}")s -> ${bin}"
}

# As helm's own Makefile sets them: its version, and the Kubernetes version `helm template` and
# `helm lint` assume (else v1.20, which the chart's kubeVersion refuses).
helm_ldflags() {
	local v major minor p="helm.sh/helm/v3"
	v="$(kube_version)"
	major="${v#v}"; major="${major%%.*}"
	minor="${v#v*.}"; minor="${minor%%.*}"
	printf '%s' "-X ${p}/internal/version.version=${HELM_VERSION} -X ${p}/internal/version.gitTreeState=clean -X ${p}/pkg/lint/rules.k8sVersionMajor=${major} -X ${p}/pkg/lint/rules.k8sVersionMinor=${minor} -X ${p}/pkg/chartutil.k8sVersionMajor=${major} -X ${p}/pkg/chartutil.k8sVersionMinor=${minor}"
}

build_helm() {
	local bin="${bin_dir}/helm" stamp_file="${bin_dir}/helm.stamp" stamp t0 gobin
	stamp="helm.sh/helm/v3/cmd/helm@${HELM_VERSION} $(go env GOVERSION) $(helm_ldflags)"
	if [ -x "${bin}" ] && [ -f "${stamp_file}" ] && [ "$(cat "${stamp_file}")" = "${stamp}" ]; then
		log "helm: up to date (${bin}, ${HELM_VERSION})"
		return
	fi
	log "helm: building helm.sh/helm/v3/cmd/helm@${HELM_VERSION} from source"
	t0=$(date +%s)
	rm -f "${stamp_file}"
	# Install into a scratch GOBIN first so a failed build never leaves a half-written binary.
	rm -rf "${bin_dir}"/.helm-build.*
	gobin="$(mktemp -d "${bin_dir}/.helm-build.XXXXXX")"
	# Run outside the repo so no go.mod/go.work of the project interferes.
	(cd "${gobin}" && GOBIN="${gobin}" GOFLAGS="${GOFLAGS:-} -trimpath" go install -ldflags "$(helm_ldflags)" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}") ||
		die "building helm ${HELM_VERSION} failed"
	mv -f "${gobin}/helm" "${bin}"
	rm -rf "${gobin}"
	printf '%s\n' "${stamp}" >"${stamp_file}"
	log "helm: built in $(elapsed "${t0}")s -> ${bin}"
}

# kubectl's main package lives in k8s.io/kubernetes, whose go.mod points the staging modules
# (k8s.io/kubectl, k8s.io/cli-runtime, ...) at local paths, so `go install ...@version` refuses
# it. It is built like the harness instead: in a scratch module carrying the harness's go.mod
# (same k8s.io/kubernetes version and replaces) and go.sum; `-mod=mod` adds what kubectl needs.
kubectl_stamp() {
	printf 'k8s.io/kubernetes/cmd/kubectl@%s %s %s ' "$(kube_version)" "$(go env GOVERSION)" "$(harness_ldflags)"
	sha256sum "${harness_src}/go.mod" | cut -d' ' -f1
}

build_kubectl() {
	local bin="${bin_dir}/kubectl" stamp_file="${bin_dir}/kubectl.stamp" stamp t0 scratch
	stamp="$(kubectl_stamp)"
	if [ -x "${bin}" ] && [ -f "${stamp_file}" ] && [ "$(cat "${stamp_file}")" = "${stamp}" ]; then
		log "kubectl: up to date (${bin}, $(kube_version))"
		return
	fi
	log "kubectl: building k8s.io/kubernetes/cmd/kubectl@$(kube_version) from the Go modules"
	t0=$(date +%s)
	rm -f "${stamp_file}"
	rm -rf "${bin_dir}"/.kubectl-build.*
	scratch="$(mktemp -d "${bin_dir}/.kubectl-build.XXXXXX")"
	sed 's|^module .*|module opsplane.io/e2e/kubectl|' "${harness_src}/go.mod" >"${scratch}/go.mod"
	cp "${harness_src}/go.sum" "${scratch}/go.sum"
	(cd "${scratch}" && GOFLAGS="${GOFLAGS:-} -mod=mod -trimpath" go build -ldflags "$(harness_ldflags)" -o "${scratch}/kubectl" k8s.io/kubernetes/cmd/kubectl) ||
		die "building kubectl $(kube_version) failed"
	mv -f "${scratch}/kubectl" "${bin}"
	rm -rf "${scratch}"
	printf '%s\n' "${stamp}" >"${stamp_file}"
	log "kubectl: built in $(elapsed "${t0}")s -> ${bin}"
}

t_all=$(date +%s)
build_harness
build_helm
build_kubectl
log "done in $(elapsed "${t_all}")s; tools in ${bin_dir}"
