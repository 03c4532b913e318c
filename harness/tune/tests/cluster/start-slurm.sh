#!/usr/bin/env bash
# Installs (apt: slurm-wlm, munge) and starts a single-node Slurm cluster on
# this machine for the executor tests: munged, slurmctld and slurmd run as
# daemons directly (no systemd), one node `localhost` with 4 CPUs declared
# (config_overrides: more slots than cores is fine for CPU-light sim trials)
# in partition `debug`. Idempotent: a running cluster is left alone.
# Needs root. Exits non-zero with a message when it cannot.
set -euo pipefail

log() { echo "start-slurm: $*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    log "needs root (apt-get, daemons)"; exit 1
fi

if ! command -v slurmctld >/dev/null 2>&1 || ! command -v munged >/dev/null 2>&1; then
    start=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >&2
    log "installed slurm-wlm and munge in $(( $(date +%s) - start )) s"
fi

if scontrol ping 2>/dev/null | grep -q UP && sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    log "slurm already up: $(sinfo -h -o '%P %D %t %c')"
    exit 0
fi

# munge: a key and the daemon.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi
for _ in $(seq 50); do munge -n >/dev/null 2>&1 && break; sleep 0.1; done
munge -n | unmunge >/dev/null || { log "munge does not work"; exit 1; }

install -d /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
cat > /etc/slurm/slurm.conf <<CONF
# Written by fuselab's harness/tune/tests/cluster/start-slurm.sh
ClusterName=fuselab
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
MinJobAge=900
SchedulerParameters=sched_interval=1,batch_sched_delay=0
NodeName=localhost CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd -N localhost
for _ in $(seq 100); do
    state=$(sinfo -h -o %t 2>/dev/null || true)
    [[ $state =~ ^(idle|mix|alloc) ]] && break
    [[ $state =~ ^(down|drain|unk) ]] && scontrol update nodename=localhost state=resume 2>/dev/null || true
    sleep 0.2
done
state=$(sinfo -h -o %t 2>/dev/null || true)
if [[ ! $state =~ ^(idle|mix|alloc) ]]; then
    log "the node did not come up (state '${state}'); logs:"
    tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
    exit 1
fi
log "slurm up: $(sinfo -h -o '%P %D %t %c CPUs')"
