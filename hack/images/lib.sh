# shellcheck shell=bash
# shellcheck disable=SC2034 # variables for the scripts that source this file
# Shared settings for hack/images scripts. Source it; do not execute it.
#
# Images are built with Debian's buildah, no Docker engine: vfs storage (works on any
# filesystem, no fuse-overlayfs), chroot isolation (no user namespaces, no runc), in a storage
# root of our own under the cache so nothing touches the host's /var/lib/containers.

IMAGES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$IMAGES_DIR/../.." && pwd)"

MODULEMESH_CACHE="${MODULEMESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/modulemesh}"
IMAGES_CACHE="$MODULEMESH_CACHE/images"

# The local base image: Debian bookworm (python3 3.11) made with debootstrap, because no base
# image can be pulled here. Bump BASE_RECIPE when the recipe changes: it moves the cache key.
BASE_SUITE=bookworm
BASE_INCLUDE=python3,python3-venv,python3-pip,ca-certificates
BASE_PYTHON=3.11 # bookworm's python3
BASE_RECIPE="r1 $BASE_SUITE minbase include=$BASE_INCLUDE"
BASE_KEY="$(printf '%s\n' "$BASE_RECIPE" | sha256sum | cut -c1-10)"
BASE_TARBALL="$IMAGES_CACHE/base-$BASE_SUITE-$BASE_KEY.tar"
BASE_IMAGE="${MODULEMESH_BASE_IMAGE:-localhost/modulemesh-base:$BASE_SUITE-$BASE_KEY}"

# buildah/podman storage of our own (vfs driver) and the image names the build produces.
STORAGE_ROOT="${MODULEMESH_IMAGE_STORAGE:-$IMAGES_CACHE/storage}"
STORAGE_RUNROOT="${MODULEMESH_IMAGE_RUNROOT:-$IMAGES_CACHE/run}"
STORAGE_ARGS=(--root "$STORAGE_ROOT" --runroot "$STORAGE_RUNROOT" --storage-driver vfs)
IMAGE_PREFIX="${MODULEMESH_IMAGE_PREFIX:-localhost/modulemesh}"
WHEELHOUSE="$IMAGES_CACHE/wheels"
CA_BUNDLE="${MODULEMESH_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# Dockerfile target -> image name (the chart's image values default to the same repositories).
image_name() { # image_name TARGET
  case "$1" in
  slim) echo "$IMAGE_PREFIX:dev" ;;
  runtime) echo "$IMAGE_PREFIX-runtime:dev" ;;
  runtime-gpu) echo "$IMAGE_PREFIX-runtime-gpu:dev" ;;
  *) die "unknown target $1 (expected slim, runtime or runtime-gpu)" ;;
  esac
}

# The Debian mirror apt already uses on this machine (deb822 .sources or one-line .list).
debian_mirror() {
  local uri
  uri="$(grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null |
    awk '{print $2}' | grep -E '/debian/?$' | head -1 || true)"
  if [[ -z "$uri" ]]; then
    uri="$(grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' |
      grep -E '/debian/?$' | head -1 || true)"
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

buildah_() { buildah "${STORAGE_ARGS[@]}" "$@"; }

image_exists() { buildah_ inspect --type image "$1" >/dev/null 2>&1; }

need() { # need COMMAND PACKAGE
  command -v "$1" >/dev/null || die "$1 is not installed (apt-get install $2; hack/deps does it)"
}

die() {
  echo "error: $*" >&2
  exit 1
}
log() {
  echo "[hack/images] $*" >&2
}
