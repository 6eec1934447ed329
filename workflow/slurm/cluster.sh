#!/usr/bin/env bash
# A real single-node SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) living in one directory.
#
#   workflow/slurm/cluster.sh up DIR     start it; prints `export SLURM_CONF=...` (also in DIR/env.sh)
#   workflow/slurm/cluster.sh down DIR   cancel every job, wait for an empty queue, stop the daemons by PID
#   workflow/slurm/cluster.sh status DIR the daemons of DIR and whether they are alive
#
# Everything (keys, sockets, databases, state, logs) stays inside DIR; each daemon runs in the
# foreground (-D/-F) in the background of this script, so its PID is known and written to DIR/pids.
# `down` works after a partial `up`. For tests and by-hand trials only: the daemons run as root and
# MariaDB listens on 127.0.0.1 without grant tables. The comments below say why each setting is there.
# Needs the SLURM, munge and MariaDB packages that tools/setup.sh installs (its APT_PACKAGES).
set -euo pipefail

SETUP_SH="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/setup.sh"  # home of the Debian package list
DAEMONS_STOP_ORDER=(slurmd slurmctld slurmdbd mariadbd munged)

# How to install the programs: tools/setup.sh, with the packages its APT_PACKAGES names.
setup_hint() {
    local pkgs
    pkgs=$(sed -n 's/^APT_PACKAGES=(\(.*\))$/\1/p' "$SETUP_SH" 2>/dev/null || true)
    echo "run tools/setup.sh${pkgs:+ (it installs: $pkgs)}"
}

die() { echo "cluster.sh: error: $*" >&2; exit 1; }
log() { echo "cluster.sh: $*" >&2; }
T0=$(date +%s.%N)
elapsed() { echo "$(date +%s.%N) $T0" | awk '{ printf "%.1f", $1 - $2 }'; }

usage() {
    echo "usage: $0 {up|down|status} DIR" >&2
    exit 2
}

check_binaries() {
    local missing=() b
    for b in munged mungekey mariadbd slurmdbd slurmctld slurmd sinfo squeue scancel sacct; do
        command -v "$b" >/dev/null 2>&1 || missing+=("$b")
    done
    if ((${#missing[@]})); then
        die "missing SLURM/munge/MariaDB programs: ${missing[*]}; $(setup_hint)"
    fi
}

# PID of daemon $1 from DIR/pids, only if that process is still alive and was started for DIR
# (guards against a recycled PID after a reboot or a crash).
daemon_pid() {
    local name=$1 pid
    [[ -f $DIR/pids ]] || return 1
    pid=$(awk -v n="$name" '$1 == n { p = $2 } END { print p }' "$DIR/pids")
    [[ -n $pid ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    # slurmdbd takes no config path: it reads slurmdbd.conf beside $SLURM_CONF, so look there too
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qF -- "$DIR/" ||
        tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF -- "SLURM_CONF=$DIR/etc/slurm.conf" || return 1
    echo "$pid"
}

record_pid() { echo "$1 $2" >>"$DIR/pids"; }

# Wait up to $2 seconds for command $1 (a string, eval'd) to succeed; fail with the tail of log $3.
wait_for() {
    local what=$1 timeout=$2 logfile=${3:-} t0=$SECONDS
    until eval "$what" >/dev/null 2>&1; do
        if ((SECONDS - t0 >= timeout)); then
            [[ -n $logfile && -f $logfile ]] && tail -n 20 "$logfile" >&2
            die "timed out after ${timeout}s waiting for: $what (see $DIR/log; stop with: $0 down $DIR)"
        fi
        sleep 0.2
    done
}

# A port nobody listens on, below the kernel's ephemeral range (32768+) so no client socket takes it.
free_port() {
    local p tries=0
    while ((tries++ < 200)); do
        p=$((17000 + RANDOM % 12000))
        if ! (: <"/dev/tcp/127.0.0.1/$p") 2>/dev/null && ! grep -qw "$p" "$DIR/ports" 2>/dev/null; then
            echo "$p" | tee -a "$DIR/ports"
            return 0
        fi
    done
    die "no free TCP port found"
}

alive_daemon() { daemon_pid "$1" >/dev/null; }

# Start "$@" in the background, record its PID under name $1 (the daemon's name).
start_daemon() {
    local name=$1
    shift
    "$@" >>"$DIR/log/$name.stdout" 2>&1 </dev/null &
    record_pid "$name" $!
}

cmd_up() {
    check_binaries
    mkdir -p "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
    # slurm.conf cannot quote paths, and a Unix socket path holds at most 107 bytes
    [[ $DIR != *[[:space:]]* ]] || die "DIR must not contain white space: '$DIR'"
    ((${#DIR} <= 80)) || die "DIR is too long for the sockets inside it (${#DIR} > 80 characters): $DIR"
    if alive_daemon slurmctld && alive_daemon slurmd; then
        log "already up in $DIR"
        cat "$DIR/env.sh"
        return 0
    fi
    if [[ -f $DIR/pids ]]; then
        log "stopping the leftovers of a previous partial start"
        cmd_down >/dev/null
    fi
    local host mem_mb nproc_ ctld_port d_port dbd_port my_port d
    host=$(hostname -s)
    nproc_=$(nproc)
    mem_mb=$(($(awk '/^MemTotal/ { print $2 }' /proc/meminfo) / 1024 - 512))

    # munged refuses a socket path with a directory that is not world-executable.
    chmod 755 "$DIR"
    d=$DIR
    while [[ $d != / ]]; do
        [[ $(($(stat -c '%a' "$d" | sed 's/^/0/') & 1)) == 1 ]] ||
            die "$d is not world-executable (mode $(stat -c %a "$d")); munged refuses sockets under it." \
                "Use a directory such as /tmp/dimr-slurm (not under /tmp/pytest-of-\$USER, which is 0700)"
        d=$(dirname "$d")
    done
    mkdir -p "$DIR"/{etc,log,run,state/ctld,state/d,munge,mysql}
    chmod 700 "$DIR/munge"
    chmod 755 "$DIR/run"
    : >"$DIR/ports"
    : >"$DIR/pids"

    # --- munge: own key and socket ---
    [[ -f $DIR/munge/munge.key ]] || mungekey -c -k "$DIR/munge/munge.key"
    local msock=$DIR/run/munge.socket
    start_daemon munged munged -F --socket="$msock" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"

    # --- MariaDB for slurmdbd: TCP on 127.0.0.1 only, no grant tables (a throwaway database that
    # needs no mariadb-install-db, which costs 3-5 s on 2 busy cores) ---
    my_port=$(free_port)
    mkdir -p "$DIR/mysql/data"
    start_daemon mariadbd mariadbd --no-defaults --datadir="$DIR/mysql/data" --user=root \
        --bind-address=127.0.0.1 --port="$my_port" --socket="$DIR/run/mysqld.sock" \
        --pid-file="$DIR/run/mysqld.pid" --log-error="$DIR/log/mariadb.log" --skip-log-bin \
        --skip-grant-tables --innodb-buffer-pool-size=32M --innodb-log-file-size=16M \
        --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --innodb-file-per-table=0
    wait_for "[[ -S $msock ]]" 10 "$DIR/log/munged.log"
    log "munged up at $(elapsed)s"

    # --- configs ---
    ctld_port=$(free_port)
    d_port=$(free_port)
    dbd_port=$(free_port)
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$msock
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
DebugLevel=info
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$my_port
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    cat >"$DIR/etc/slurm.conf" <<EOF
# Generated by workflow/slurm/cluster.sh for $DIR
ClusterName=dimr
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire=10: a requeued job may restart after 11 s instead of 121 s
AuthInfo=socket=$msock,cred_expire=10
StateSaveLocation=$DIR/state/ctld
SlurmdSpoolDir=$DIR/state/d
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=bf_interval=1,sched_interval=1
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
# accounting: sacct (and so submitit's job.state) needs slurmdbd; clients find its munge socket here
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$msock
JobCompType=jobcomp/none
# preemption: the low-priority partition is requeued and gets the job's --signal (USR2) first
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
GresTypes=gpu
NodeName=$host NodeAddr=127.0.0.1 CPUs=$nproc_ RealMemory=$mem_mb Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=60
PartitionName=high Nodes=$host MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
    cat >"$DIR/etc/gres.conf" <<EOF
# A fake GPU: jobs asking for gpu:1 are scheduled and see CUDA_VISIBLE_DEVICES=0
AutoDetect=off
NodeName=$host Name=gpu File=/dev/null
EOF
    export SLURM_CONF=$DIR/etc/slurm.conf
    echo "export SLURM_CONF=$SLURM_CONF" >"$DIR/env.sh"

    wait_for "(: </dev/tcp/127.0.0.1/$my_port)" 30 "$DIR/log/mariadb.log"
    log "mariadbd up at $(elapsed)s"
    start_daemon slurmdbd slurmdbd -D  # reads $DIR/etc/slurmdbd.conf
    wait_for "(: </dev/tcp/127.0.0.1/$dbd_port)" 30 "$DIR/log/slurmdbd.log"
    log "slurmdbd up at $(elapsed)s"
    start_daemon slurmctld slurmctld -D -f "$SLURM_CONF"
    start_daemon slurmd slurmd -D -f "$SLURM_CONF"
    wait_for "[[ \$(sinfo -h -o %T 2>/dev/null) == idle ]]" 60 "$DIR/log/slurmctld.log"
    log "up in $(elapsed)s: $DIR (stop with: $0 down $DIR)"
    cat "$DIR/env.sh"
}

# Whether PID runs; a zombie has exited (a container's PID 1 may take seconds to reap it).
running() { [[ -r /proc/$1/stat ]] && [[ $(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) != Z ]]; }

# TERM the daemon and wait for it (KILL after $2 seconds).
stop_daemon() {
    local name=$1 timeout=${2:-20} pid t0=$SECONDS
    pid=$(daemon_pid "$name") || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    while running "$pid"; do
        if ((SECONDS - t0 >= timeout)); then
            log "$name (pid $pid) ignored TERM for ${timeout}s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        sleep 0.1
    done
    log "stopped $name (pid $pid) at $(elapsed)s"
}

cmd_down() {
    [[ -d $DIR ]] || { log "nothing to stop: $DIR does not exist"; return 0; }
    DIR=$(cd "$DIR" && pwd -P)
    export SLURM_CONF=$DIR/etc/slurm.conf
    if alive_daemon slurmctld; then
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            # running jobs end within KillWait (5 s) of the TERM that scancel sends
            local tq=$SECONDS
            while [[ -n $(squeue -h -o %i 2>/dev/null) ]] && ((SECONDS - tq < 30)); do sleep 0.2; done
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] || log "queue still not empty after 30s; stopping anyway"
            log "queue empty at $(elapsed)s"
        fi
    fi
    local name
    for name in "${DAEMONS_STOP_ORDER[@]}"; do stop_daemon "$name"; done
    stop_orphan_stepds
    rm -f "$DIR/pids"
    log "down in $(elapsed)s: $DIR"
}

# Job step daemons of DIR that outlived slurmd (only after a controller crash left jobs behind), and
# the job processes under them: found by the SLURM_CONF they inherited from this cluster's slurmd,
# then by parent PID, never by name alone.
stop_orphan_stepds() {
    local p pids=() kids
    for p in /proc/[0-9]*; do
        [[ $(cat "$p/comm" 2>/dev/null) == slurmstepd ]] || continue
        tr '\0' '\n' 2>/dev/null <"$p/environ" | grep -qxF -- "SLURM_CONF=$DIR/etc/slurm.conf" || continue
        pids+=("${p#/proc/}")
    done
    ((${#pids[@]})) || return 0
    kids=("${pids[@]}")
    while ((${#kids[@]})); do  # breadth-first over the process tree below the step daemons
        mapfile -t kids < <(awk -v ps=" ${kids[*]} " '{ sub(/.*\) /, ""); if (index(ps, " " $2 " ")) print FILENAME }' \
            /proc/[0-9]*/stat 2>/dev/null | sed 's#/proc/##; s#/stat##')
        pids+=("${kids[@]}")
    done
    log "killing leftover job step daemons and their jobs: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

cmd_status() {
    local name pid rc=0
    for name in munged mariadbd slurmdbd slurmctld slurmd; do
        if pid=$(daemon_pid "$name"); then echo "$name $pid alive"; else echo "$name - stopped"; rc=1; fi
    done
    return $rc
}

(($# == 2)) || usage
DIR=$2
case $1 in
up) cmd_up ;;
down) cmd_down ;;
status) DIR=$(cd "$DIR" 2>/dev/null && pwd -P) || die "no such directory: $2"; cmd_status ;;
*) usage ;;
esac
