#!/bin/sh
# Build meshproxy's container image, and the local base image it can be built from.
#
#   deploy/image.sh engine                 print the usable engine: podman, buildah or docker
#   deploy/image.sh base  [NAME]           Debian bookworm + python3 + python3-venv, made with
#                                          mmdebstrap and imported as NAME (kept if it exists;
#                                          FORCE=1 rebuilds)
#   deploy/image.sh build [TAG] [BASE]     deploy/Containerfile from the repository root
#
# An engine is usable when its `info` succeeds: a docker client without a reachable daemon is
# not. ENGINE=podman|buildah|docker picks one. Run from anywhere; paths are the repository's.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

engine() {
    for candidate in ${ENGINE:-podman buildah docker}; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
            echo "$candidate"
            return 0
        fi
    done
    echo "no usable image engine: install podman (apt-get install podman) or start a docker daemon" >&2
    return 1
}

exists() {  # engine, image name
    case $1 in
        docker) docker image inspect "$2" >/dev/null 2>&1 ;;
        *) "$1" image exists "$2" ;;
    esac
}

base() {
    name=${1:-localhost/meshproxy-base}
    tool=$(engine)
    if [ -z "${FORCE:-}" ] && exists "$tool" "$name"; then
        echo "$name exists (FORCE=1 rebuilds it)"
        return 0
    fi
    command -v mmdebstrap >/dev/null 2>&1 || { echo "mmdebstrap is missing: apt-get install mmdebstrap" >&2; return 1; }
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # The apt variant (Essential packages and apt): the Containerfile installs the compiler
    # and iptables with apt. Documentation and translations are left out.
    mmdebstrap --variant=apt --include=python3,python3-venv \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --dpkgopt='path-exclude=/usr/share/info/*' \
        bookworm "$work/base.tar"
    case $tool in
        buildah) buildah import "$work/base.tar" "$name" 2>/dev/null || podman import "$work/base.tar" "$name" ;;
        *) "$tool" import --change 'CMD ["/bin/bash"]' "$work/base.tar" "$name" ;;
    esac
}

build() {
    tag=${1:-localhost/meshproxy}
    tool=$(engine)
    set -- -f "$ROOT/deploy/Containerfile" -t "$tag"
    [ -n "${BASE:-}" ] && set -- "$@" --build-arg "BASE=$BASE"
    [ -s "$CA_BUNDLE" ] && set -- "$@" --secret "id=ca,src=$CA_BUNDLE"
    case $tool in
        podman) podman build --layers --isolation "${ISOLATION:-chroot}" --ignorefile "$ROOT/deploy/Containerfile.dockerignore" "$@" "$ROOT" ;;
        buildah) buildah bud --layers --isolation "${ISOLATION:-chroot}" --ignorefile "$ROOT/deploy/Containerfile.dockerignore" "$@" "$ROOT" ;;
        docker) DOCKER_BUILDKIT=1 docker build "$@" "$ROOT" ;;
    esac
}

command=${1:-}
[ $# -gt 0 ] && shift
case $command in
    engine) engine ;;
    base) base "$@" ;;
    build) BASE=${2:-${BASE:-}} build "${1:-}" ;;
    *) echo "usage: $0 engine | base [NAME] | build [TAG] [BASE]" >&2; exit 2 ;;
esac
