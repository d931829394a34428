#!/usr/bin/env bash
# A real Slurm cluster of one node on the loopback address, and the exported grid on it.
#
# Installs Debian's slurm-wlm and munge packages when they are missing (needs root and the
# package registry), writes a one-node configuration into a temporary folder, starts munged,
# slurmctld and slurmd, and runs the test `cli_slurm::a_real_slurm_runs_the_exported_grid`
# (a study and the fine-tuning cells that use it, submitted by the export's submit.sh, waited
# for, each cell checked to have run exactly once, and `report` on the results), then
# `cli_slurm::a_real_slurm_requeue_mid_cell_resumes_it_to_the_uninterrupted_numbers` (a task
# exported with --requeue, `scontrol requeue` mid-cell: the cell checkpoints on SIGTERM and the
# requeued task resumes it to the numbers of a straight run). Every daemon
# started here is stopped by its PID when the script ends, however it ends.
#
#   bash scripts/slurm-test.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v slurmctld > /dev/null || ! command -v munged > /dev/null; then
    echo "== installing slurm-wlm and munge (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        sudo="sudo -E"
    fi
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq slurm-wlm munge > /dev/null
fi

work=$(mktemp -d /tmp/neuronlab-slurm.XXXXXX)
pids=()
stop() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2> /dev/null || true
    done
    for pid in "${pids[@]}"; do
        # Bounded: a daemon that ignores TERM for 10 s is killed.
        for _ in $(seq 100); do
            kill -0 "$pid" 2> /dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2> /dev/null || true
    done
    rm -rf "$work"
}
trap stop EXIT

# munge: a key of this run's own, its socket in the work folder.
mkdir -p "$work/munge" "$work/spool/ctld" "$work/spool/d" "$work/log"
chmod 700 "$work/munge"
dd if=/dev/urandom of="$work/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$work/munge/munge.key"
socket="$work/munge/munge.socket"
munged --foreground --force --key-file="$work/munge/munge.key" --socket="$socket" \
    --pid-file="$work/munge/munged.pid" --log-file="$work/log/munged.log" \
    --seed-file="$work/munge/munge.seed" > "$work/log/munged.out" 2>&1 &
pids+=($!)

cpus=$(nproc)
memory=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2))
host=$(hostname -s)
cat > "$work/slurm.conf" << EOF
ClusterName=neuronlab-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$socket
CryptoType=crypto/munge
StateSaveLocation=$work/spool/ctld
SlurmdSpoolDir=$work/spool/d
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/log/slurmctld.log
SlurmdLogFile=$work/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=3600
KillWait=5
Waittime=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$work/slurm.conf"

# munged is up when its socket answers.
for _ in $(seq 100); do
    [ -S "$socket" ] && break
    sleep 0.1
done

echo "== starting slurmctld and slurmd (one node: $host, $cpus CPUs)"
slurmctld -D -i -f "$SLURM_CONF" > "$work/log/slurmctld.out" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" > "$work/log/slurmd.out" 2>&1 &
pids+=($!)

ready=""
for _ in $(seq 300); do
    if sinfo -h -o '%t' 2> /dev/null | grep -qE '^(idle|mix|alloc)'; then
        ready=yes
        break
    fi
    sleep 0.2
done
if [ -z "$ready" ]; then
    echo "the node did not come up in 60 s:" >&2
    sinfo >&2 || true
    tail -n 30 "$work/log/"*.log "$work/log/"*.out >&2 || true
    exit 1
fi
sinfo

echo "== the exported grid on Slurm"
started=$(date +%s)
status=0
NEURONLAB_SLURM=1 cargo test -p runner --test integration -- --ignored --nocapture \
    --test-threads=1 cli_slurm::a_real_slurm_ || status=$?
echo "== Slurm test: $(($(date +%s) - started)) s (exit status $status)"
if [ "$status" != 0 ]; then
    tail -n 30 "$work/log/"*.log >&2 || true
fi
exit "$status"
