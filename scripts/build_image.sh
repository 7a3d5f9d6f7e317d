#!/usr/bin/env bash
# Build cyseg's Docker image on this machine and show that it runs, end to end (docs/DEPLOY.md, "Building
# the image here"):
#   scripts/build_image.sh [BASE_IMAGE]
# 1. base: BASE_IMAGE, else a Debian bookworm root with Python 3.11 made by debootstrap and `docker import`ed
#    as $BASE_TAG (kept: a second run reuses it);
# 2. build: BuildKit, --build-arg BASE, the CA bundle that pip's `cert` setting names passed as the build
#    secret `ca` (never in a layer: step 3 checks the image's history and files for it);
# 4. save: scripts/bundle_task.sh tags the task image (the task as entry point), `docker save`s it and
#    zips it with task/descriptor.yml in $OUT;
# 5. run: `cyseg demo` with the embedded server on this machine: the legacy job (run.py) in a container of
#    the image on --network host, and the App Engine task through the server's local App Engine, which
#    runs the task image's container (no network, /inputs and /outputs mounted).
# Environment: TAG (the image's name), BASE_TAG, OUT (default out/image), DOCKER (a client with BuildKit),
# DEMO_ARGS (more options for `cyseg demo`, e.g. "--width 1024 --height 768").
set -euo pipefail

main() {
    root=$(cd "$(dirname "$0")/.." && pwd)
    cd "$root"
    tag=${TAG:-cyseg/s_cyseg_nuclei:$(sed -n 's/^version: *//p' task/descriptor.yml | head -n 1)}
    base_tag=${BASE_TAG:-cyseg/debian-python:3.11-bookworm}
    out=${OUT:-out/image}
    docker=${DOCKER:-$(buildkit_client)}
    python=${PYTHON:-$root/.venv/bin/python}
    start_daemon
    base=${1:-}
    local started=$SECONDS
    if [ -z "$base" ]; then
        base=$base_tag
        "$docker" image inspect "$base" >/dev/null 2>&1 || make_base "$base"
        echo "base $base: $(size "$base") ($((SECONDS - started)) s)"
    fi
    ca=$(ca_bundle)
    step "build $tag on $base (pip's CA bundle $ca as the build secret 'ca')"
    started=$SECONDS
    DOCKER_BUILDKIT=1 "$docker" build --progress=plain --network host --build-arg "BASE=$base" \
        --secret "id=ca,src=$ca" -t "$tag" .
    echo "built $tag in $((SECONDS - started)) s: $(size "$tag")"
    check_secret_absent "$tag" "$ca"
    step "bundle the task"
    started=$SECONDS
    PATH="$(dirname "$docker"):$PATH" scripts/bundle_task.sh "$tag" "$out"
    echo "bundled in $((SECONDS - started)) s"; ls -l "$out"
    step "the legacy job and the App Engine task in containers, against the embedded server here"
    started=$SECONDS
    # shellcheck disable=SC2086  # DEMO_ARGS: words on purpose
    PATH="$(dirname "$docker"):$PATH" "$python" -m cyseg demo --image "$tag" \
        --task-image "$(scripts/bundle_task.sh --tag)" --out out/image-demo ${DEMO_ARGS:-}
    echo "demo in $((SECONDS - started)) s"
}

size() { "$docker" image inspect -f '{{.Size}}' "$1" | awk '{printf "%.2f GB", $1 / 1e9}'; }

step() { printf '\n== %s\n' "$*"; }

buildkit_client() {
    # Docker 23+ builds with BuildKit through its buildx plugin; Debian's docker.io (20.10) has it built in.
    if docker buildx version >/dev/null 2>&1 || [ ! -x /usr/bin/docker ]; then command -v docker; else echo /usr/bin/docker; fi
}

start_daemon() {
    "$docker" info >/dev/null 2>&1 && return
    command -v dockerd >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io; }
    step "starting dockerd (log: /tmp/dockerd.log)"
    nohup dockerd >/tmp/dockerd.log 2>&1 &
    for _ in $(seq 60); do "$docker" info >/dev/null 2>&1 && return; sleep 1; done
    echo "dockerd did not start: $(tail -n 1 /tmp/dockerd.log)" >&2
    exit 1
}

make_base() {
    # Python 3.11 from Debian in a virtual environment first on PATH, as `python` and `pip` are in python:3.11-slim;
    # the headers too, for the build stage's C extension.
    step "base image $1: debootstrap bookworm + docker import"
    command -v debootstrap >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap; }
    local rootfs
    rootfs=$(mktemp -d /tmp/cyseg-rootfs.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv,libpython3.11-dev bookworm "$rootfs" \
        http://deb.debian.org/debian
    chroot "$rootfs" python3 -m venv /opt/python
    chroot "$rootfs" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin'
    tar -C "$rootfs" -c . | "$docker" import \
        -c 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$1"
    rm -rf "$rootfs"
}

ca_bundle() {
    local file
    file=$(pip config list 2>/dev/null | sed -n "s/^[a-z:]*\.cert='\(.*\)'$/\1/p" | head -n 1)
    file=${file:-${PIP_CERT:-}}
    [ -f "$file" ] || { echo "pip's cert setting names no file ('$file'): set it (pip config set global.cert FILE)" >&2; exit 1; }
    echo "$file"
}

check_secret_absent() {
    # The bundle must be in no layer: no history step names it, no file of the image has its bytes.
    local image=$1 ca=$2 digest size
    step "the CA bundle is not in $image"
    if "$docker" history --no-trunc --format '{{.CreatedBy}}' "$image" | grep -F -e "$ca" -e 'src='; then
        echo "the build history names the CA bundle" >&2; exit 1
    fi
    digest=$(sha256sum "$ca" | cut -d' ' -f1)
    size=$(stat -c %s "$ca")
    if "$docker" run --rm --user 0 --entrypoint sh "$image" -c \
        "test ! -e /run/secrets/ca && find / -xdev -type f -size ${size}c -exec sha256sum {} +" | grep -F "$digest"; then
        echo "the CA bundle is a file of the image" >&2; exit 1
    fi
    echo "absent: no history step names it, no file of the image ($size bytes, sha256 ${digest:0:12}...) is it"
}

main "$@"; exit
