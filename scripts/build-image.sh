#!/usr/bin/env bash
# Builds the opsplane container image (both binaries) into an OCI archive without a docker
# daemon and without a registry: no base image is pulled. The image is assembled from
# binaries built on this machine plus exactly the shared libraries they load (found with
# ldd), nsenter for the node-daemon's host access, CA certificates and the time-zone
# database, with umoci (Debian package `umoci`). The Dockerfile builds an equivalent image
# (same binaries, nsenter, user and labels) for builders that have network access.
#
# Usage: scripts/build-image.sh [options]
#   --profile P         cargo profile to build (default: release); ignored when both binaries
#                       are given
#   --operator PATH     use this opsplane-operator binary instead of building one
#   --node-daemon PATH  use this opsplane-node-daemon binary instead of building one
#   --name NAME         image name (default: ghcr.io/opsplane/opsplane, the chart's default)
#   --tag TAG           image tag (default: the version the binaries print, the chart's
#                       appVersion)
#   --out FILE          the OCI archive to write (default: dist/opsplane-<tag>.oci.tar)
#   --docker-archive FILE
#                       also write a docker-archive (for `kind load image-archive`,
#                       `k3d image import`; made from the OCI archive with skopeo)
#
# Prints the archive path(s) on the last line(s) of stdout.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
profile=release
operator=""
node_daemon=""
name=ghcr.io/opsplane/opsplane
tag=""
out=""
docker_archive=""

die() { echo "build-image.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=${2:?--profile needs a value}; shift 2 ;;
    --operator) operator=${2:?--operator needs a path}; shift 2 ;;
    --node-daemon) node_daemon=${2:?--node-daemon needs a path}; shift 2 ;;
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a path}; shift 2 ;;
    --docker-archive) docker_archive=${2:?--docker-archive needs a path}; shift 2 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v umoci >/dev/null || die "umoci is required (Debian: apt-get install umoci)"
command -v ldd >/dev/null || die "ldd is required (Debian: libc-bin)"
nsenter=$(command -v nsenter) || die "nsenter is required (Debian: util-linux)"
if [ -n "$docker_archive" ]; then
  command -v skopeo >/dev/null || die "--docker-archive needs skopeo (Debian: apt-get install skopeo)"
fi

if [ -z "$operator" ] || [ -z "$node_daemon" ]; then
  command -v cargo >/dev/null || die "cargo is required to build the binaries (or pass --operator and --node-daemon)"
  target=${CARGO_TARGET_DIR:-$root/target}
  (cd "$root" && cargo build --locked --profile "$profile" -p opsplane-operator -p opsplane-node-daemon) >&2
  dir=$profile
  [ "$profile" = dev ] && dir=debug
  operator=${operator:-$target/$dir/opsplane-operator}
  node_daemon=${node_daemon:-$target/$dir/opsplane-node-daemon}
fi
for bin in "$operator" "$node_daemon"; do
  [ -x "$bin" ] || die "$bin is not an executable file"
done

# The version is what the binaries themselves say, so label and --version cannot disagree.
version=$("$operator" --version | awk '{print $2}')
daemon_version=$("$node_daemon" --version | awk '{print $2}')
[ -n "$version" ] || die "$operator --version printed no version"
[ "$version" = "$daemon_version" ] || die "operator is $version but node-daemon is $daemon_version"
tag=${tag:-$version}
out=${out:-$root/dist/opsplane-$tag.oci.tar}

case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$root" status --porcelain 2>/dev/null)" ]; then
  revision=$revision-dirty
fi
# Reproducible: the commit's time (or SOURCE_DATE_EPOCH), not the clock.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

work=$(mktemp -d "${TMPDIR:-/tmp}/opsplane-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{usr/local/bin,usr/bin,etc/ssl/certs,tmp,var/lib/opsplane,home/opsplane,usr/share}

install -m 0755 "$operator" "$rootfs/usr/local/bin/opsplane-operator"
install -m 0755 "$node_daemon" "$rootfs/usr/local/bin/opsplane-node-daemon"
# nsenter: the node-daemon reaches the host's systemd and power commands by entering PID 1's
# namespaces (hostPID), as kured does; the chart wires it only when host access is enabled.
install -m 0755 "$nsenter" "$rootfs/usr/bin/nsenter"

# Exactly the shared libraries each binary loads, at the paths the loader looks for them.
copy_libs() {
  local bin=$1 listing
  if ! listing=$(ldd "$bin" 2>&1); then
    case "$listing" in
      *"not a dynamic executable"*|*"statically linked"*) return 0 ;;
      *) die "ldd $bin: $listing" ;;
    esac
  fi
  case "$listing" in *"not found"*) die "ldd $bin: a library is missing: $listing" ;; esac
  # `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` and `/lib64/ld-linux-x86-64.so.2 (0x...)`
  awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$listing" |
    while read -r lib; do
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
}
for bin in "$operator" "$node_daemon" "$nsenter"; do
  copy_libs "$bin"
done

# Users: root (the node-daemon's securityContext) and opsplane (65532, the default user).
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
opsplane:x:65532:65532:opsplane:/home/opsplane:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
opsplane:x:65532:
EOF
chmod 1777 "$rootfs/tmp"
chown 65532:65532 "$rootfs/home/opsplane" "$rootfs/var/lib/opsplane"
# TLS roots for https MonitoredServices and webhooks; time zones for schedules.
for ca in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -f "$ca" ]; then cp -L "$ca" "$rootfs/etc/ssl/certs/ca-certificates.crt"; break; fi
done
[ -f "$rootfs/etc/ssl/certs/ca-certificates.crt" ] || die "no CA bundle found (Debian: ca-certificates)"
[ -d /usr/share/zoneinfo ] || die "no /usr/share/zoneinfo (Debian: tzdata)"
cp -a /usr/share/zoneinfo "$rootfs/usr/share/zoneinfo"
find "$rootfs" -exec touch -h -d "@$epoch" {} +

layout=$work/oci
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci insert --image "$layout:$tag" --history.created "$created" \
  --history.created_by "scripts/build-image.sh (opsplane $version, $revision)" "$rootfs" /
labels=(
  "org.opencontainers.image.title=opsplane"
  "org.opencontainers.image.description=opsplane operator and node-daemon"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.created=$created"
  "org.opencontainers.image.source=https://github.com/opsplane/opsplane"
  "org.opencontainers.image.url=https://opsplane.io"
  "org.opencontainers.image.licenses=Apache-2.0"
  "org.opencontainers.image.vendor=opsplane"
)
config=(--os linux --architecture "$arch" --created "$created" --author opsplane
  --config.user 65532:65532 --config.workingdir /
  --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env HOME=/home/opsplane
  --config.cmd opsplane-operator --config.exposedports 8080/tcp --config.exposedports 6666/tcp
  --history.created "$created" --history.created_by "umoci config")
for label in "${labels[@]}"; do
  config+=(--config.label "$label" --manifest.annotation "$label")
done
umoci config --image "$layout:$tag" "${config[@]}"
umoci gc --layout "$layout"

mkdir -p "$(dirname "$out")"
tar -C "$layout" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "$out"
if [ -n "$docker_archive" ]; then
  mkdir -p "$(dirname "$docker_archive")"
  rm -f "$docker_archive"
  skopeo copy --quiet "oci-archive:$out" "docker-archive:$docker_archive:$name:$tag" >&2
  echo "$docker_archive"
fi
