#!/usr/bin/env bash
# A single-node SLURM cluster on this machine: munged, slurmctld and slurmd, one partition ("local",
# every core of this machine), for trying `hydra/launcher=submitit_slurm` locally and for the SLURM
# tests (`make test-slurm`). Idempotent: `start` installs what is missing (Debian slurm-wlm and munge,
# needs root), writes /etc/slurm/slurm.conf (kept when already the same), starts what is not running
# and waits until the node is idle; `stop` shuts the daemons down; `status` prints sinfo.
#
#   scripts/slurm_local.sh start | stop | status
set -euo pipefail

PARTITION="${SLURM_LOCAL_PARTITION:-local}"
CONF=/etc/slurm/slurm.conf
HOST="$(hostname -s)"

say() { echo "slurm_local: $*" >&2; }
die() { say "$*"; exit 1; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are missing and installing them needs root (apt-get)"
    say "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
}

write_config() {
    local cpus mem tmp
    cpus="$(nproc)"
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))  # MiB, 1 GiB left to the system
    tmp="$(mktemp)"
    cat > "$tmp" <<CONF
# written by copal_exp scripts/slurm_local.sh: one node, one partition
ClusterName=copal-local
SlurmctldHost=$HOST
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=30
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
    mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
    if ! cmp -s "$tmp" "$CONF"; then
        mv "$tmp" "$CONF"
        chmod 644 "$CONF"
        CONFIG_CHANGED=1
    else
        rm -f "$tmp"
    fi
}

start_munge() {
    pgrep -x munged >/dev/null && return
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
        chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    fi
    mkdir -p /run/munge && chown munge:munge /run/munge
    runuser -u munge -- /usr/sbin/munged
}

start() {
    install_packages
    CONFIG_CHANGED=0
    write_config
    start_munge
    if [ "$CONFIG_CHANGED" = 1 ] && pgrep -x slurmctld >/dev/null; then
        say "configuration changed: restarting the daemons"
        stop_daemons
    fi
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    for _ in $(seq 1 60); do
        state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -1 || true)"
        case "$state" in
            idle|mixed|allocated|completing) say "node $HOST is $state (partition $PARTITION)"; return ;;
            down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    die "the node did not become idle in 60 s; see /var/log/slurm/slurmctld.log and slurmd.log"
}

stop_daemons() {
    scontrol shutdown >/dev/null 2>&1 || true
    for _ in $(seq 1 30); do
        pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || return 0
        sleep 1
    done
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case "${1:-}" in
    start) start ;;
    stop) stop_daemons; pkill -x munged || true; say "stopped" ;;
    status) sinfo ;;
    *) die "usage: $0 start | stop | status" ;;
esac
