#!/usr/bin/env bash
# slurm-up.sh — start a private single-node Slurm cluster on this machine for
# the tests (issue 10 item 4): munged + slurmctld + slurmd from Debian's
# `munge` and `slurm-wlm` (installed by tools/setup-debian.sh; this script
# installs nothing), all state under one directory:
#
#   EHAT_SLURM_DIR   state dir (default /tmp/ehat-slurm): munge key/socket,
#                    slurm.conf, spool, state, logs, pid files, env.sh
#   EHAT_SLURM_CTLD_PORT / EHAT_SLURM_NODE_PORT
#                    TCP ports (default: two free ports derived from the dir,
#                    so clusters in different dirs can run side by side)
#   EHAT_SLURM_HOLDER
#                    pid that holds the cluster (default: the caller, $PPID);
#                    slurm-down.sh stops the daemons when no holder is alive
#   EHAT_SLURM_TIMEOUT  seconds to wait for the node to be idle (default 60)
#
# Usage:  bash tests/slurm/slurm-up.sh && source "${EHAT_SLURM_DIR:-/tmp/ehat-slurm}/env.sh"
#         sbatch/squeue/scontrol/scancel/sinfo then talk to this cluster.
#
# Idempotent: if the cluster in the dir is already up it is reused.  Jobs run
# as the submitting user (root in CI: slurmd runs as root, root jobs allowed).
# Exit 0 when up, 77 (with the reason and the daemon logs' tails on stderr)
# when Slurm cannot be started here, 1 on a usage error.
set -uo pipefail

dir=${EHAT_SLURM_DIR:-/tmp/ehat-slurm}
timeout=${EHAT_SLURM_TIMEOUT:-60}
holder=${EHAT_SLURM_HOLDER:-$PPID}
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
say() { echo "slurm-up: $*" >&2; }

case $dir in
  /*) ;;
  *) dir=$(pwd)/$dir ;;
esac
# unix socket paths are limited to 108 bytes
if [ ${#dir} -gt 60 ]; then
  say "EHAT_SLURM_DIR too long (${#dir} > 60 characters): $dir"
  exit 1
fi

log_tails() {
  local f
  for f in "$dir"/munge/munged.log "$dir"/log/slurmctld.log "$dir"/log/slurmd.log \
           "$dir"/log/slurmctld.out "$dir"/log/slurmd.out; do
    [ -s "$f" ] || continue
    echo "----- tail of $f -----" >&2
    tail -n 25 "$f" >&2
  done
}

skip() {
  say "SKIP: Slurm cannot be started: $*"
  log_tails
  # do not leave half a cluster behind
  EHAT_SLURM_LOCKED=1 EHAT_SLURM_DIR=$dir bash "$here/slurm-down.sh" --force >/dev/null 2>&1 || true
  exit 77
}

# --- binaries -------------------------------------------------------------
missing=()
for b in munged mungekey slurmctld slurmd sinfo sbatch squeue scontrol scancel; do
  p=$(command -v "$b" 2>/dev/null) && [ -x "$p" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "SKIP: Slurm cannot be started: missing ${missing[*]} (apt-get install slurm-wlm munge; tools/setup-debian.sh does)"
  exit 77
fi
if [ "$(id -u)" != 0 ]; then
  say "SKIP: Slurm cannot be started: needs root (slurmd runs jobs as the submitting user)"
  exit 77
fi

mkdir -p "$dir" || skip "cannot create $dir"
chmod 0755 "$dir"

# One slurm-up/slurm-down at a time per state dir (the daemons are started
# with fd 9 closed so they do not hold the lock).
exec 9>"$dir.lock" || skip "cannot create $dir.lock"
if ! flock -w 120 9; then
  # someone else is starting or stopping it: leave their cluster alone
  say "SKIP: Slurm cannot be started: timed out waiting for the lock $dir.lock"
  exit 77
fi

pid_alive() { # pidfile
  local p
  [ -s "$1" ] || return 1
  p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null &&
    [ "$(awk '{print $3}' "/proc/$p/stat" 2>/dev/null)" != Z ]   # not a zombie
}

node_state() {
  SLURM_CONF=$dir/etc/slurm.conf timeout 10 sinfo -h -N -o '%T' 2>/dev/null | head -n 1
}

add_holder() {
  echo "$holder" >>"$dir/holders"
}

# --- already up? ------------------------------------------------------------
if [ -f "$dir/env.sh" ] && pid_alive "$dir/munge/munged.pid" &&
   pid_alive "$dir/run/slurmctld.pid" && pid_alive "$dir/run/slurmd.pid"; then
  case $(node_state) in
    idle|mixed|allocated|completing)
      add_holder
      say "reusing the cluster in $dir"
      exit 0 ;;
  esac
fi
# Partly up or stale: stop what is there and start again.
if [ -e "$dir/etc/slurm.conf" ] || [ -e "$dir/munge/munged.pid" ]; then
  say "stale or partial cluster in $dir: restarting it"
  held=$(cat "$dir/holders" 2>/dev/null)
  EHAT_SLURM_LOCKED=1 EHAT_SLURM_DIR=$dir bash "$here/slurm-down.sh" --force >&2 || true
  mkdir -p "$dir"
  # the processes that held the old cluster hold the new one
  [ -z "$held" ] || printf '%s\n' "$held" >"$dir/holders"
fi
rm -f "$dir/env.sh"

mkdir -p "$dir"/{munge,etc,state,spool,log,run,tmp} || skip "cannot create dirs under $dir"
chmod 0755 "$dir/munge"   # the socket must be reachable; the key is 0400
chmod 1777 "$dir/tmp"

# --- munge ------------------------------------------------------------------
key=$dir/munge/munge.key
if [ ! -s "$key" ]; then
  mungekey --create --keyfile="$key" >/dev/null 2>&1 ||
    dd if=/dev/urandom of="$key" bs=1 count=1024 status=none ||
    skip "cannot create the munge key"
fi
chmod 0400 "$key"
sock=$dir/munge/munge.socket
# A clean environment for the daemons (no LD_PRELOAD, sanitizer or test vars).
denv=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TZ="${TZ:-UTC}")
"${denv[@]}" munged --force --socket="$sock" --key-file="$key" \
  --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
  --seed-file="$dir/munge/munged.seed" --num-threads=2 \
  </dev/null >>"$dir/munge/munged.out" 2>&1 9>&- || skip "munged failed to start"
for _ in $(seq 50); do
  [ -S "$sock" ] && pid_alive "$dir/munge/munged.pid" && break
  sleep 0.1
done
[ -S "$sock" ] || skip "munged did not create $sock"
if command -v munge >/dev/null 2>&1; then
  munge --socket="$sock" -n </dev/null | unmunge --socket="$sock" >/dev/null 2>&1 ||
    skip "munge credential round trip failed"
fi

# --- ports ------------------------------------------------------------------
listening() { # port -> 0 when something listens on it
  ss -Hltn "sport = :$1" 2>/dev/null | grep -q . && return 0
  return 1
}
if [ -n "${EHAT_SLURM_CTLD_PORT:-}" ]; then
  cport=$EHAT_SLURM_CTLD_PORT
  dport=${EHAT_SLURM_NODE_PORT:-$((cport + 1))}
else
  h=$(printf '%s' "$dir" | cksum | cut -d' ' -f1)
  cport=$((20000 + (h % 10000) * 2))
  for _ in $(seq 200); do
    if ! listening "$cport" && ! listening $((cport + 1)); then break; fi
    cport=$((cport + 2))
    [ "$cport" -lt 40000 ] || cport=20000
  done
  dport=$((cport + 1))
fi

# --- slurm.conf ---------------------------------------------------------------
node=$(hostname -s 2>/dev/null || hostname)
[ -n "$node" ] || node=localhost
nodeline=$(slurmd -C 2>/dev/null | grep '^NodeName=' | head -n 1)
[ -n "$nodeline" ] || skip "slurmd -C did not report this node"
cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$nodeline")
mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$nodeline")
# keep the node's topology words as slurmd reports them
topo=$(grep -o -E '(Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore)=[0-9]+' <<<"$nodeline" | tr '\n' ' ')
[ -n "$cpus" ] || cpus=$(nproc)
[ -n "$mem" ] || mem=1000

cat >"$dir/etc/slurm.conf" <<EOF
# Written by tests/slurm/slurm-up.sh: a private single-node cluster for tests.
ClusterName=ehat-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$cport
SlurmdPort=$dport
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
TmpFS=$dir/tmp
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=100000
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=600
MaxJobCount=10000
NodeName=$node NodeAddr=127.0.0.1 NodeHostname=$node CPUs=$cpus ${topo}RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# cgroup.conf: slurmd 22.05 initialises its cgroup plugin even with
# proctrack/linuxproc and task/none; no systemd is needed for it (cgroup v2
# would otherwise ask systemd over D-Bus for a scope).
cat >"$dir/etc/cgroup.conf" <<EOF
CgroupPlugin=autodetect
CgroupAutomount=no
IgnoreSystemd=yes
EOF

# --- slurmctld + slurmd ---------------------------------------------------
conf=$dir/etc/slurm.conf
"${denv[@]}" SLURM_CONF="$conf" slurmctld -f "$conf" -i \
  </dev/null >>"$dir/log/slurmctld.out" 2>&1 9>&- || skip "slurmctld failed to start"
for _ in $(seq 100); do
  pid_alive "$dir/run/slurmctld.pid" &&
    SLURM_CONF=$conf timeout 5 scontrol ping 2>/dev/null | grep -q UP && break
  sleep 0.2
done
pid_alive "$dir/run/slurmctld.pid" || skip "slurmctld exited"
"${denv[@]}" SLURM_CONF="$conf" slurmd -f "$conf" -N "$node" \
  </dev/null >>"$dir/log/slurmd.out" 2>&1 9>&- || skip "slurmd failed to start"

deadline=$((SECONDS + timeout))
state=
while [ $SECONDS -lt $deadline ]; do
  pid_alive "$dir/run/slurmctld.pid" || skip "slurmctld exited"
  state=$(node_state)
  # exactly "idle": "idle*" is a node that has not answered yet
  case $state in
    idle) break ;;
    drain*|down*|fail*)
      # a node left down by an earlier run: resume it
      SLURM_CONF=$conf scontrol update NodeName="$node" State=RESUME >/dev/null 2>&1 || true ;;
  esac
  if [ $SECONDS -gt $((deadline - timeout + 5)) ] && ! pid_alive "$dir/run/slurmd.pid"; then
    skip "slurmd exited"
  fi
  sleep 0.5
done
case $state in
  idle) ;;
  *) skip "node $node not idle after ${timeout}s (state: ${state:-no answer from slurmctld})" ;;
esac

cat >"$dir/env.sh" <<EOF
# source me: points the Slurm commands at the cluster in $dir
export EHAT_SLURM_DIR=$dir
export SLURM_CONF=$conf
export EHAT_SLURM_PARTITION=debug
export EHAT_SLURM_NODE=$node
# for the munge/unmunge client tools (Slurm itself reads AuthInfo)
export EHAT_MUNGE_SOCKET=$sock
EOF
add_holder
say "up: node $node ($cpus CPUs, ${mem} MB), slurmctld port $cport, slurmd port $dport, conf $conf"
exit 0
