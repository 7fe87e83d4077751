#!/bin/sh
# Optional test tier: a real Docker engine (Debian's docker.io) and a locally made base image, so
# that tests/containers/test_docker_build.py can build the real Dockerfile and run jobs in it.
#
#   sh tests/containers/docker_tier.sh up     install docker.io + debootstrap, start a private
#                                            dockerd, make the base image (a few minutes once)
#   sh tests/containers/docker_tier.sh down   stop the dockerd this script started (by its pid)
#   sh tests/containers/docker_tier.sh env    print the DOCKER_HOST line for the tests
#
# No registry is reachable here, so the base is made from Debian packages: debootstrap minbase +
# python3, imported into Docker, then the local CPU torch wheel (/opt/wheels) in a venv on PATH,
# which is what the pytorch/pytorch images look like to the Dockerfile (a Python with torch).
# PyPI is reached from inside builds with the host's CA bundle, which is copied into the TEST
# base image only (never into the repository). Needs root.
set -eu

RUN=${GLAMHPC_DOCKER_DIR:-/var/tmp/glamhpc-docker}
SOCK="$RUN/docker.sock"
BASE=${GLAMHPC_DOCKER_BASE:-glamhpc-test-base:cpu}
WHEEL_DIR=${GLAMHPC_TORCH_WHEELS:-/opt/wheels}
CA=${GLAMHPC_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

dk() {
    docker --host "unix://$SOCK" "$@"
}

start_daemon() {
    if [ -S "$SOCK" ] && dk info >/dev/null 2>&1; then
        return 0
    fi
    mkdir -p "$RUN/data" "$RUN/exec"
    # No bridge and no iptables: the sandbox has no NAT; builds and runs use the host network.
    setsid dockerd --host "unix://$SOCK" --data-root "$RUN/data" --exec-root "$RUN/exec" \
        --pidfile "$RUN/dockerd.pid" --bridge none --iptables=false \
        >"$RUN/dockerd.log" 2>&1 </dev/null &
    i=0
    until dk info >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            echo "dockerd did not start; see $RUN/dockerd.log" >&2
            exit 1
        fi
        sleep 0.5
    done
}

make_base() {
    if dk image inspect "$BASE" >/dev/null 2>&1; then
        return 0
    fi
    wheel=$(find "$WHEEL_DIR" -name 'torch-*+cpu-*.whl' | sort | tail -n 1)
    if [ -z "$wheel" ]; then
        echo "no CPU torch wheel in $WHEEL_DIR: refusing to let pip fetch the CUDA build" >&2
        exit 1
    fi
    rootfs="$RUN/rootfs"
    if ! dk image inspect glamhpc-test-base:minbase >/dev/null 2>&1; then
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" >"$RUN/debootstrap.log" 2>&1
        tar -C "$rootfs" -c . | dk import - glamhpc-test-base:minbase >/dev/null
        rm -rf "$rootfs"
    fi
    ctx="$RUN/base-context"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp "$wheel" "$ctx/"
    cp "$CA" "$ctx/ca-certificates.crt"
    cat >"$ctx/Dockerfile" <<EOF
FROM glamhpc-test-base:minbase
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY $(basename "$wheel") /tmp/
ENV PATH=/opt/venv/bin:\$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN python3 -m venv /opt/venv && pip install --no-cache-dir /tmp/$(basename "$wheel") \
    && rm /tmp/*.whl && python -c "import torch; print(torch.__version__)"
EOF
    dk build --network host --tag "$BASE" "$ctx"
    rm -rf "$ctx"
}

case ${1:-} in
up)
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io debootstrap >/dev/null
    fi
    start_daemon
    make_base
    echo "DOCKER_HOST=unix://$SOCK"
    ;;
down)
    if [ -f "$RUN/dockerd.pid" ]; then
        kill "$(cat "$RUN/dockerd.pid")" 2>/dev/null || true
    fi
    ;;
env)
    echo "DOCKER_HOST=unix://$SOCK"
    ;;
*)
    echo "usage: docker_tier.sh up|down|env" >&2
    exit 2
    ;;
esac
