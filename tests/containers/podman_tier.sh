#!/bin/sh
# Optional test tier: a real Podman engine (Debian's podman 4.3) with its own stores and config,
# and a locally made base image, so that tests/containers/test_podman*.py can build the real
# Dockerfile with `glamhpc build --engine podman` and run jobs in it, rootful and rootless.
#
#   sh tests/containers/podman_tier.sh up     install podman + debootstrap, write the private
#                                            config, make the base image (a few minutes once),
#                                            set up and probe rootless podman
#   sh tests/containers/podman_tier.sh down   podman has no daemon: removes leftover containers
#                                            and the rootless pause process, keeps the caches
#   sh tests/containers/podman_tier.sh env    print the variables the tests need
#
# Rootful: everything lives under $GLAMHPC_PODMAN_DIR (default /var/tmp/glamhpc-podman) and is
# selected by CONTAINERS_CONF / CONTAINERS_STORAGE_CONF, so the user's and the system's own podman
# configuration are neither read nor changed. This host is itself a container with cgroup v1 and
# no systemd: cgroupfs, a file events log, runc, host network (no bridge can be set up here), and
# explicit ulimits (podman's default copies the host's, which runc cannot raise in here).
#
# Rootless: an unprivileged user ($GLAMHPC_PODMAN_USER, default glamhpc-rootless, with the
# subuid/subgid ranges useradd gives it), its own store and configuration under $RUN/rootless,
# and a probe `podman run` as that user. The probe's outcome goes to $RUN/rootless/status ("ok",
# or the error), which the rootless tests read.
#
# The base is made like the Docker tier's, without needing it: debootstrap minbase + python3,
# imported into podman, then the local CPU torch wheel (/opt/wheels) in a venv on PATH (what the
# pytorch/pytorch images look like to the Dockerfile). The host's CA bundle goes into this TEST
# base only, for PyPI from inside builds. Needs root.
set -eu

RUN=${GLAMHPC_PODMAN_DIR:-/var/tmp/glamhpc-podman}
BASE=${GLAMHPC_PODMAN_BASE:-glamhpc-test-base:cpu}
WHEEL_DIR=${GLAMHPC_TORCH_WHEELS:-/opt/wheels}
CA=${GLAMHPC_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
USER_NAME=${GLAMHPC_PODMAN_USER:-glamhpc-rootless}
RL="$RUN/rootless"
export CONTAINERS_CONF="$RUN/containers.conf" CONTAINERS_STORAGE_CONF="$RUN/storage.conf"

# write_config DIR: storage.conf and containers.conf for a store kept in DIR.
write_config() {
    mkdir -p "$1/storage" "$1/run" "$1/tmp"
    cat >"$1/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$1/storage"
runroot = "$1/run"
EOF
    cat >"$1/containers.conf" <<EOF
[containers]
netns = "host"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$1/events.log"
runtime = "runc"
tmp_dir = "$1/tmp"
EOF
}

make_base() {
    if podman image exists "$BASE"; then
        return 0
    fi
    wheel=$(find "$WHEEL_DIR" -name 'torch-*+cpu-*.whl' | sort | tail -n 1)
    if [ -z "$wheel" ]; then
        echo "no CPU torch wheel in $WHEEL_DIR: refusing to let pip fetch the CUDA build" >&2
        exit 1
    fi
    if ! podman image exists glamhpc-test-base:minbase; then
        rootfs="$RUN/rootfs"
        rm -rf "$rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" >"$RUN/debootstrap.log" 2>&1
        tar -C "$rootfs" -c . | podman import - glamhpc-test-base:minbase >/dev/null
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
    podman build --network host --tag "$BASE" "$ctx"
    rm -rf "$ctx"
}

# as_user CMD...: run CMD as the rootless user with its own store and runtime folder.
as_user() {
    runuser -u "$USER_NAME" -- env HOME="$RL/home" XDG_RUNTIME_DIR="$RL/xdg" \
        CONTAINERS_CONF="$RL/containers.conf" CONTAINERS_STORAGE_CONF="$RL/storage.conf" "$@"
}

setup_rootless() {
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        useradd --no-create-home --home-dir "$RL/home" --shell /usr/sbin/nologin "$USER_NAME"
    fi
    mkdir -p "$RL/home" "$RL/xdg"
    write_config "$RL"
    chown "$USER_NAME:" "$RL"
    chown -R "$USER_NAME:" "$RL/home" "$RL/xdg" "$RL/storage" "$RL/run" "$RL/tmp"
    chmod 700 "$RL/xdg"
    # `--ipc host` (what glamhpc's jobs use) makes rootless podman bind the host's /dev/mqueue.
    # Linux hosts have it mounted; this container does not ("Error: statfs /dev/mqueue: no such
    # file or directory"), so it is mounted once. Rootful podman does not need it.
    if ! grep -q ' /dev/mqueue mqueue ' /proc/mounts; then
        mkdir -p /dev/mqueue
        mount -t mqueue mqueue /dev/mqueue
    fi
    status=ok
    # The user's store gets the base (copied from the rootful one, once): the rootless tests
    # build the repository's image on it in that store, whose layer cache then stays warm.
    if ! as_user podman image exists "$BASE"; then
        podman save --quiet --output "$RL/base.tar" "$BASE"
        chown "$USER_NAME:" "$RL/base.tar"
        if ! as_user podman load --quiet --input "$RL/base.tar" >"$RL/probe.log" 2>&1; then
            status="podman load: $(tail -n 1 "$RL/probe.log")"
        fi
        rm -f "$RL/base.tar"
    fi
    uid=$(id -u "$USER_NAME")
    gid=$(id -g "$USER_NAME")
    if [ "$status" = ok ] && ! (cd "$RL" && as_user podman run --rm --network host --ipc host \
        --userns keep-id --user "$uid:$gid" --entrypoint true "$BASE") \
        >"$RL/probe.log" 2>&1; then
        status="podman run: $(tail -n 1 "$RL/probe.log")"
    fi
    echo "$status" >"$RL/status"
}

print_env() {
    echo "CONTAINERS_CONF=$CONTAINERS_CONF"
    echo "CONTAINERS_STORAGE_CONF=$CONTAINERS_STORAGE_CONF"
}

case ${1:-} in
up)
    if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            podman debootstrap >/dev/null
    fi
    write_config "$RUN"
    podman info --format '{{.Host.OCIRuntime.Name}} {{.Store.GraphDriverName}}' >/dev/null
    make_base
    setup_rootless
    print_env
    echo "rootless: $(cat "$RL/status")"
    ;;
down)
    # Containers are run with --rm; one left by a killed test is removed so the next run starts
    # clean. The image stores stay: they make the next run warm.
    if [ -f "$RUN/containers.conf" ]; then
        podman container prune --force >/dev/null 2>&1 || true
    fi
    # Rootless podman keeps one "pause" process per user, holding its user namespace; its pid
    # file is in the engine's tmp_dir.
    if [ -f "$RL/tmp/pause.pid" ]; then
        kill "$(cat "$RL/tmp/pause.pid")" 2>/dev/null || true
        rm -f "$RL/tmp/pause.pid"
    fi
    ;;
env)
    print_env
    ;;
*)
    echo "usage: podman_tier.sh up|down|env" >&2
    exit 2
    ;;
esac
