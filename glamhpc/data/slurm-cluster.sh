#!/usr/bin/env bash
# A real Slurm cluster (1 to 3 "nodes") on this one machine, for glamhpc's tests, CI and for
# users who want to try multi-node submits and array sweeps on a workstation.
#
#   cluster.sh install            apt-get the Debian packages (idempotent, quiet)
#   cluster.sh up [--nodes N]     munge, private MariaDB + slurmdbd, slurmctld, N slurmd (n1..nN)
#   cluster.sh down [--purge]     cancel the cluster's jobs, stop ONLY the daemons we started
#   cluster.sh status             daemons, nodes and their state
#
# Everything lives under $GLAMHPC_SLURM_DIR (default /var/lib/glamhpc-slurm): configs, state, logs,
# the database and one pid file per daemon we started. `down` signals exactly those pids (TERM,
# then KILL), after checking that each pid still runs the program we started (pids get reused).
# Root acts on what that folder says (pids to signal, configs its daemons load), so `up` and
# `down` refuse one that another user owns or could write to (or a symlink): a predictable
# world-writable place like /tmp would let any local user plant them first. The folder stays
# world-readable (0755) because every user's sbatch/sinfo reads etc/slurm.conf; the database
# password is random, made on the first `up`, and kept 0600 (etc/db-password, slurmdbd.conf).
# State (job ids, accounting) survives down/up so job ids never repeat: submitit names its files
# by job id, and a reused id could make a new job read an old job's result. `down --purge` wipes it.
#
# Needs root (slurmd runs jobs as any user; the daemons run as root here, no systemd, no cgroups).
# Facts behind the choices: shared/docs/LOCAL_SLURM_CLUSTER.md.
#
# This file ships inside the package (glamhpc/data/) so that `glamhpc cluster up` finds it after a
# plain pip install; slurm/cluster.sh in the repository is a symlink to it.
set -euo pipefail

RUN_DIR="${GLAMHPC_SLURM_DIR:-/var/lib/glamhpc-slurm}"
# Where glamhpc <= 0.1 kept it: a cluster started from there is stopped from there.
LEGACY_RUN_DIR=/tmp/glamhpc-slurm
CPUS_PER_NODE="${GLAMHPC_SLURM_CPUS:-$(nproc)}"
CTLD_PORT="${GLAMHPC_SLURM_CTLD_PORT:-6817}"
DBD_PORT="${GLAMHPC_SLURM_DBD_PORT:-6819}"
DB_PORT="${GLAMHPC_SLURM_DB_PORT:-3307}"
SLURMD_PORT_BASE="${GLAMHPC_SLURM_SLURMD_PORT_BASE:-17000}"
PARTITION="${GLAMHPC_SLURM_PARTITION:-debug}"
UP_TIMEOUT_S="${GLAMHPC_SLURM_UP_TIMEOUT_S:-90}"
MAX_NODES=3
HOSTS_MARK="# glamhpc-slurm"
CONF="$RUN_DIR/etc/slurm.conf"
DBD_CONF="$RUN_DIR/etc/slurmdbd.conf"
PIDS="$RUN_DIR/pids"
LOGS="$RUN_DIR/log"
DB_DIR="$RUN_DIR/mysql"
DB_PASSWORD_FILE="$RUN_DIR/etc/db-password"
SYSTEM_CONF=/etc/slurm/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { printf '[glamhpc-slurm] %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

need_root() {
    [[ $(id -u) -eq 0 ]] || die "the local cluster runs its daemons as root; run as root (or sudo)"
}

# The run folder: created root-owned 0755 when missing; refused when a symlink, not owned by
# root, writable by group or others, or inside a folder others may write to without the sticky
# bit (they could swap it). Checked before anything in it is read as root.
secure_run_dir() {
    local dir=$RUN_DIR parent owner mode
    [[ $dir == /* ]] || die "GLAMHPC_SLURM_DIR must be an absolute path, got '$dir'"
    parent=$(dirname "$dir")
    [[ -d $parent && ! -L $parent ]] || die "$parent (the folder above $dir) must be an existing folder"
    owner=$(stat -c %u "$parent")
    mode=$(stat -c %a "$parent")
    if [[ $owner != 0 ]] || { ((8#$mode & 8#022)) && ! ((8#$mode & 8#1000)); }; then
        die "$parent is writable by other users: choose GLAMHPC_SLURM_DIR inside a root-owned folder"
    fi
    if [[ ! -e $dir && ! -L $dir ]]; then
        install -d -m 0755 -o root -g root "$dir"
    fi
    [[ -d $dir && ! -L $dir ]] || die "$dir is not a folder (a symlink?): remove it or set GLAMHPC_SLURM_DIR"
    owner=$(stat -c %u "$dir")
    mode=$(stat -c %a "$dir")
    if [[ $owner != 0 ]] || ((8#$mode & 8#022)); then
        die "$dir belongs to uid $owner with mode $mode: the cluster needs a folder only root can write; remove it or set GLAMHPC_SLURM_DIR"
    fi
}

# A cluster an older glamhpc started from /tmp keeps running from there; say how to stop it.
legacy_cluster_note() {
    [[ -z ${GLAMHPC_SLURM_DIR:-} && $RUN_DIR != "$LEGACY_RUN_DIR" ]] || return 0
    compgen -G "$LEGACY_RUN_DIR/pids/*.pid" >/dev/null || return 0
    log "note: a cluster started by an older glamhpc may still run from $LEGACY_RUN_DIR; stop it with: GLAMHPC_SLURM_DIR=$LEGACY_RUN_DIR $0 down"
}

# The MariaDB password of slurmdbd: random, made once, readable by root only.
db_password() {
    if [[ ! -s $DB_PASSWORD_FILE ]]; then
        local random
        # A bounded read, no `tr </dev/urandom | head`: under pipefail tr's SIGPIPE would fail it.
        random=$(LC_ALL=C tr -dc 'A-Za-z0-9' < <(head -c 1024 /dev/urandom))
        ((${#random} >= 32)) || die "could not read enough randomness from /dev/urandom"
        (
            umask 077
            printf '%s' "${random:0:32}" >"$DB_PASSWORD_FILE.tmp"
            mv -f "$DB_PASSWORD_FILE.tmp" "$DB_PASSWORD_FILE"
        )
    fi
    chmod 600 "$DB_PASSWORD_FILE"
    cat "$DB_PASSWORD_FILE"
}

need_binaries() {
    local missing=()
    local bin
    for bin in munged slurmctld slurmd slurmdbd mariadbd mariadb-install-db sinfo sbatch; do
        command -v "$bin" >/dev/null 2>&1 || [[ -x /usr/sbin/$bin ]] || missing+=("$bin")
    done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run '$0 install' (or: glamhpc cluster install)"
}

# Path of a daemon binary: /usr/sbin is not on every user's PATH.
bin_path() {
    command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"
}

cmd_install() {
    need_root
    local missing=()
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "packages already installed"
        return 0
    fi
    log "installing ${missing[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
    log "installed"
}

# ----------------------------------------------------------------------------- pid bookkeeping

# A recorded pid counts as ours only while it still runs the binary we recorded with it.
pid_alive() {
    local name=$1 pid expected
    [[ -f $PIDS/$name.pid ]] || return 1
    read -r pid expected <"$PIDS/$name.pid" || return 1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(readlink -f "/proc/$pid/exe" 2>/dev/null || true) == "$expected" ]]
}

# Wait until "$@" succeeds, failing early if the daemon $1 died (its log tail is shown).
wait_for() {
    local name=$1 what=$2 timeout=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if ! pid_alive "$name"; then
            log "$name died while waiting for $what; last log lines:"
            tail -n 15 "$LOGS/$name.log" >&2 2>/dev/null || true
            exit 1
        fi
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what ($LOGS/$name.log)"
        sleep 0.2
    done
}

# Start a daemon in its own session and record its pid. setsid/setpriv/unshare/sh all exec in
# place, so $! ends up running the daemon binary; wait for that before recording it, so that the
# pid file names the daemon (a pid is only ever signalled while it runs that binary).
start_daemon() {
    local name=$1 expected
    expected=$(readlink -f "$2")
    shift 2
    setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
    local pid=$! deadline=$((SECONDS + 10))
    until [[ $(readlink -f "/proc/$pid/exe" 2>/dev/null || true) == "$expected" ]]; do
        [[ -d /proc/$pid ]] || die "$name exited right after start; see $LOGS/$name.log"
        ((SECONDS < deadline)) || die "$name (pid $pid) did not exec $expected"
        sleep 0.05
    done
    echo "$pid $expected" >"$PIDS/$name.pid"
}

# Alive and not a zombie: our daemons are reparented to pid 1, which may reap them late.
running() {
    local state
    # The state follows the last ')' (the command name may itself contain spaces or parens).
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1 || true)
    [[ -n $state && $state != Z ]]
}

stop_pid_file() {
    local name=$1 pid expected
    [[ -f $PIDS/$name.pid ]] || return 0
    if pid_alive "$name"; then
        read -r pid expected <"$PIDS/$name.pid"
        local t0=$SECONDS
        kill -TERM "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while running "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if running "$pid"; then
            log "$name (pid $pid) ignored SIGTERM for 15s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name (pid $pid, ${expected##*/}) in $((SECONDS - t0))s"
    fi
    rm -f "$PIDS/$name.pid"
}

# Pid-file names of the slurmd nodes we started (n1..nK), whatever K was.
node_names() {
    local f
    for f in "$PIDS"/slurmd-n*.pid; do
        [[ -e $f ]] || continue
        f=${f##*/slurmd-}
        echo "${f%.pid}"
    done
}

# ----------------------------------------------------------------------------- configuration

write_configs() {
    local nodes=$1 mem i password
    mkdir -p "$RUN_DIR/etc" "$RUN_DIR/state" "$RUN_DIR/spool" "$RUN_DIR/run" "$LOGS" "$PIDS"
    # slurmctld's state is its own; the spool stays 0755: job steps run as their user from it.
    chmod 700 "$RUN_DIR/state"
    password=$(db_password)
    # Memory is not enforced (no cgroups); advertising the host's memory lets --mem requests pass.
    mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
    {
        echo "# glamhpc local cluster ($nodes node(s)); generated by cluster.sh up"
        echo "ClusterName=glamhpc"
        echo "SlurmctldHost=$(hostname -s)(127.0.0.1)"
        echo "SlurmctldPort=$CTLD_PORT"
        echo "SlurmUser=root"
        echo "SlurmdUser=root"
        echo "AuthType=auth/munge"
        echo "CredType=cred/munge"
        # Short credential lifetime: a requeued job may restart ~10 s after it ended instead of
        # waiting out the default 120 s (Reason=BeginTime).
        echo "AuthInfo=cred_expire=10"
        echo "MpiDefault=none"
        # No cgroups in containers/VMs without systemd: track processes by parent pid.
        echo "ProctrackType=proctrack/linuxproc"
        echo "TaskPlugin=task/none"
        echo "SelectType=select/cons_tres"
        echo "SelectTypeParameters=CR_Core"
        echo "SchedulerType=sched/backfill"
        # Schedule right away: tests and users wait on submit->start latency.
        echo "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1,sched_interval=2"
        echo "ReturnToService=2"
        echo "MailProg=/bin/true"
        echo "JobAcctGatherType=jobacct_gather/linux"
        echo "JobAcctGatherFrequency=30"
        # submitit learns job states from sacct: without accounting a cancelled job hangs result().
        echo "AccountingStorageType=accounting_storage/slurmdbd"
        echo "AccountingStorageHost=localhost"
        echo "AccountingStoragePort=$DBD_PORT"
        echo "JobCompType=jobcomp/none"
        echo "KillWait=5"
        echo "MinJobAge=300"
        echo "InactiveLimit=0"
        echo "Waittime=0"
        echo "SlurmctldTimeout=30"
        echo "SlurmdTimeout=60"
        echo "StateSaveLocation=$RUN_DIR/state"
        echo "SlurmctldPidFile=$RUN_DIR/run/slurmctld.pid"
        echo "SlurmctldLogFile=$LOGS/slurmctld.log"
        # Several slurmd on one host: %n gives each node its own spool, pid and log.
        echo "SlurmdParameters=config_overrides"
        echo "SlurmdSpoolDir=$RUN_DIR/spool/%n"
        echo "SlurmdPidFile=$RUN_DIR/run/slurmd-%n.pid"
        echo "SlurmdLogFile=$LOGS/slurmd-%n.log"
        for ((i = 1; i <= nodes; i++)); do
            echo "NodeName=n$i NodeHostname=n$i NodeAddr=127.0.2.$i Port=$((SLURMD_PORT_BASE + i)) CPUs=$CPUS_PER_NODE RealMemory=$mem State=UNKNOWN"
        done
        echo "PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
    } >"$CONF"

    umask 077
    {
        echo "AuthType=auth/munge"
        echo "DbdAddr=127.0.0.1"
        echo "DbdHost=localhost"
        echo "DbdPort=$DBD_PORT"
        echo "SlurmUser=root"
        echo "PidFile=$RUN_DIR/run/slurmdbd.pid"
        echo "LogFile=$LOGS/slurmdbd.log"
        echo "StorageType=accounting_storage/mysql"
        echo "StorageHost=127.0.0.1"
        echo "StoragePort=$DB_PORT"
        echo "StorageUser=slurm"
        echo "StoragePass=$password"
        echo "StorageLoc=slurm_acct_db"
    } >"$DBD_CONF"
    umask 022
    chmod 600 "$DBD_CONF"
}

add_hosts_entries() {
    local nodes=$1 i
    for ((i = 1; i <= nodes; i++)); do
        grep -Eq "^127\.0\.2\.${i}[[:space:]]+n${i}([[:space:]]|\$)" /etc/hosts ||
            echo "127.0.2.$i n$i $HOSTS_MARK" >>/etc/hosts
    done
}

# Client commands (sinfo, sbatch, submitit's subprocesses) read /etc/slurm/slurm.conf unless
# SLURM_CONF is set: point it at our config, but never replace a site's real file.
link_system_conf() {
    if [[ -L $SYSTEM_CONF || ! -e $SYSTEM_CONF ]]; then
        mkdir -p "${SYSTEM_CONF%/*}"
        ln -sfn "$CONF" "$SYSTEM_CONF"
    elif [[ $(readlink -f "$SYSTEM_CONF") != "$CONF" ]]; then
        log "note: $SYSTEM_CONF is a site file; use: export SLURM_CONF=$CONF"
    fi
}

unlink_system_conf() {
    if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$CONF" ]]; then
        rm -f "$SYSTEM_CONF"
    fi
}

# ----------------------------------------------------------------------------- daemons

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
    pid_alive munged && return 0
    if munge_works; then
        # A munged we did not start (the system's) already serves the socket: reuse it.
        pid_alive munged || log "using the munged that is already running"
        return 0
    fi
    [[ -f /etc/munge/munge.key ]] || mungekey --create >/dev/null
    mkdir -p /run/munge
    chown munge:munge /run/munge
    start_daemon munged "$(bin_path munged)" setpriv --reuid=munge --regid=munge --init-groups "$(bin_path munged)" -F
    wait_for munged "munge" 20 munge_works
}

db_query() {
    # SQL on stdin, not -e: statements may carry the password, and argv is visible to everyone.
    mariadb --no-defaults --protocol=socket --socket="$DB_DIR/mysqld.sock" -uroot <<<"$1"
}

start_mariadb() {
    pid_alive mariadb && return 0
    if [[ ! -d $DB_DIR/mysql ]]; then
        mkdir -p "$DB_DIR"
        chown mysql:mysql "$DB_DIR"
        mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" \
            --auth-root-authentication-method=socket --skip-test-db \
            --innodb-log-file-size=16M >"$LOGS/mariadb-install.log" 2>&1 ||
            die "mariadb-install-db failed; see $LOGS/mariadb-install.log"
    fi
    # Socket, pid and error log inside the mysql-owned datadir: elsewhere mariadbd cannot bind.
    start_daemon mariadb "$(bin_path mariadbd)" "$(bin_path mariadbd)" --no-defaults --user=mysql --datadir="$DB_DIR" \
        --socket="$DB_DIR/mysqld.sock" --pid-file="$DB_DIR/mysqld.pid" \
        --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$DB_DIR/mysqld.err" \
        --skip-name-resolve --innodb-buffer-pool-size=32M --innodb-log-file-size=16M
    wait_for mariadb "MariaDB on port $DB_PORT" 60 db_query "SELECT 1"
    local password
    password=$(db_password)
    # ALTER as well as CREATE: a database made by an older script has the old fixed password.
    db_query "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
        CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
        ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$password';
        ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

dbd_up() { SLURM_CONF=$CONF sacctmgr -n show cluster format=cluster; }
ctld_up() { SLURM_CONF=$CONF scontrol ping | grep -q UP; }

# Number of our nodes that sinfo reports idle (or mixed/allocated: busy nodes are up too).
nodes_ready() {
    local want=$1 ready
    ready=$(SLURM_CONF=$CONF sinfo -h -N -o '%N %t' 2>/dev/null |
        awk '$2 ~ /^(idle|mix|alloc)$/ {print $1}' | sort -u | wc -l)
    ((ready >= want))
}

start_slurmd() {
    local node=$1
    # Own UTS namespace: the node's jobs see `hostname` = n<i>, so torchrun's rendezvous address
    # and Slurm's node list look like a real multi-host allocation.
    start_daemon "slurmd-$node" "$(bin_path slurmd)" unshare --uts /bin/sh -c \
        "hostname $node && exec $(bin_path slurmd) -D -N $node -f $CONF"
}

up_failed() {
    (($1 != 0)) || return 0
    log "bring-up failed: stopping the daemons it started"
    stop_all
}

cmd_up() {
    local nodes=1
    while (($#)); do
        case $1 in
        --nodes | -n)
            nodes=${2:-}
            shift 2
            ;;
        --nodes=*)
            nodes=${1#*=}
            shift
            ;;
        *) die "unknown option for up: $1 (expected --nodes N)" ;;
        esac
    done
    if ! [[ $nodes =~ ^[0-9]+$ ]] || ((nodes < 1 || nodes > MAX_NODES)); then
        die "--nodes must be 1..$MAX_NODES (all nodes share this machine), got '$nodes'"
    fi
    need_root
    need_binaries
    secure_run_dir
    legacy_cluster_note

    if pid_alive slurmctld; then
        local have
        have=$(node_names | wc -l)
        if ((have == nodes)) && nodes_ready "$nodes"; then
            log "already up with $nodes node(s)"
            cmd_status
            return 0
        fi
        die "a cluster with $have node(s) is already up; run 'down' first"
    fi

    local t0=$SECONDS
    # A failed bring-up leaves nothing running behind it.
    trap 'up_failed $?' EXIT
    mkdir -p "$PIDS" "$LOGS"
    # Stale pid files from a crash or reboot describe nothing we could still stop.
    local f
    for f in "$PIDS"/*.pid; do
        [[ -e $f ]] || continue
        f=${f##*/}
        pid_alive "${f%.pid}" || rm -f "$PIDS/$f"
    done
    write_configs "$nodes"
    add_hosts_entries "$nodes"
    link_system_conf

    start_munge
    start_mariadb
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
    pid_alive slurmdbd || start_daemon slurmdbd "$(bin_path slurmdbd)" \
        env SLURM_CONF="$CONF" "$(bin_path slurmdbd)" -D
    wait_for slurmdbd "slurmdbd on port $DBD_PORT" 60 dbd_up
    start_daemon slurmctld "$(bin_path slurmctld)" "$(bin_path slurmctld)" -D -f "$CONF"
    wait_for slurmctld "slurmctld on port $CTLD_PORT" 60 ctld_up
    local i
    for ((i = 1; i <= nodes; i++)); do
        pid_alive "slurmd-n$i" || start_slurmd "n$i"
    done
    wait_for slurmctld "$nodes node(s) idle" "$UP_TIMEOUT_S" nodes_ready "$nodes"
    local n
    for n in $(node_names); do
        pid_alive "slurmd-$n" || die "slurmd on $n died; see $LOGS/slurmd-$n.log"
    done
    trap - EXIT
    log "up: $nodes node(s) in $((SECONDS - t0))s; run dir $RUN_DIR"
    cmd_status
}

cancel_all_jobs() {
    ctld_up 2>/dev/null || return 0
    local ids
    ids=$(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null || true)
    [[ -n $ids ]] || return 0
    log "cancelling the cluster's jobs: $(echo "$ids" | tr '\n' ' ')"
    # shellcheck disable=SC2086  # one argument per job id
    SLURM_CONF=$CONF scancel $ids 2>/dev/null || true
    # Let slurmd reap the job steps; their processes are not daemons we could stop by pid.
    local deadline=$((SECONDS + 20))
    while [[ -n $(SLURM_CONF=$CONF squeue -h -o %A 2>/dev/null) ]] && ((SECONDS < deadline)); do
        sleep 0.5
    done
}

# Stop in dependency order; slurmctld flushes its last records to slurmdbd, so that one goes after.
stop_all() {
    local n
    for n in $(node_names); do
        stop_pid_file "slurmd-$n" &
    done
    wait
    stop_pid_file slurmctld
    stop_pid_file slurmdbd
    stop_pid_file mariadb
    stop_pid_file munged
}

cmd_down() {
    local purge=0
    while (($#)); do
        case $1 in
        --purge)
            purge=1
            shift
            ;;
        *) die "unknown option for down: $1 (expected --purge)" ;;
        esac
    done
    need_root
    [[ -d $RUN_DIR || -L $RUN_DIR ]] && secure_run_dir
    [[ -d $PIDS ]] || {
        legacy_cluster_note
        log "nothing to stop ($RUN_DIR has no pid files)"
        ((purge == 0)) || rm -rf "$RUN_DIR"
        return 0
    }
    cancel_all_jobs
    stop_all
    unlink_system_conf
    if ((purge)); then
        rm -rf "$RUN_DIR"
        log "purged $RUN_DIR"
    fi
    log "down"
}

cmd_status() {
    if ! pid_alive slurmctld; then
        echo "cluster: down (run dir $RUN_DIR)"
        return 3
    fi
    echo "cluster: up (run dir $RUN_DIR, SLURM_CONF=$CONF)"
    local f name pid
    for f in "$PIDS"/*.pid; do
        [[ -e $f ]] || continue
        name=${f##*/}
        name=${name%.pid}
        read -r pid _ <"$f"
        if pid_alive "$name"; then echo "  $name: pid $pid"; else echo "  $name: DEAD (pid $pid)"; fi
    done
    SLURM_CONF=$CONF sinfo -N -o '%N %P %t %c %m' || true
}

main() {
    local cmd=${1:-}
    (($#)) && shift
    case $cmd in
    install) cmd_install "$@" ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    status) cmd_status "$@" ;;
    -h | --help | help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
