#!/usr/bin/env bash
# slurm-down.sh — stop the private Slurm cluster started by slurm-up.sh in
# EHAT_SLURM_DIR (default /tmp/ehat-slurm) and remove that directory.
#
# The caller is removed from the cluster's holders (EHAT_SLURM_HOLDER, default
# $PPID, as in slurm-up.sh); while another live process still holds the
# cluster it is left running.  --force stops it regardless.
# Jobs still queued or running are cancelled, then slurmd, slurmctld, any
# slurmstepd of this cluster and munged are stopped (TERM, then KILL after
# 10 s).  EHAT_SLURM_KEEP=1 keeps the directory (logs) after stopping.
# Exit 0 (also when nothing was running).
set -uo pipefail

dir=${EHAT_SLURM_DIR:-/tmp/ehat-slurm}
holder=${EHAT_SLURM_HOLDER:-$PPID}
force=0
[ "${1:-}" = --force ] && force=1
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
case $dir in
  /*) ;;
  *) dir=$(pwd)/$dir ;;
esac

say() { echo "slurm-down: $*" >&2; }

[ -d "$dir" ] || exit 0

if [ "${EHAT_SLURM_LOCKED:-0}" != 1 ]; then
  exec 9>"$dir.lock" || exit 0
  flock -w 120 9 || say "timed out waiting for $dir.lock; going on"
fi

# --- holders ----------------------------------------------------------------
if [ -f "$dir/holders" ]; then
  live=()
  while read -r p; do
    [ -n "$p" ] || continue
    [ "$p" = "$holder" ] && continue
    kill -0 "$p" 2>/dev/null && live+=("$p")
  done <"$dir/holders"
  if [ ${#live[@]} -gt 0 ]; then
    printf '%s\n' "${live[@]}" | sort -u >"$dir/holders"
  else
    : >"$dir/holders"
  fi
  if [ $force = 0 ] && [ ${#live[@]} -gt 0 ]; then
    say "cluster in $dir still held by pid(s) ${live[*]}; leaving it up"
    exit 0
  fi
fi

pid_of() { [ -s "$1" ] && cat "$1" 2>/dev/null; }

alive() { # pid: running (a zombie is not)
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null &&
    [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]
}

stop_pids() { # pid... : TERM all, wait up to 10 s, then KILL what is left
  local p left=()
  for p in "$@"; do
    [ -n "$p" ] && kill -TERM "$p" 2>/dev/null && left+=("$p")
  done
  for _ in $(seq 100); do
    [ ${#left[@]} -gt 0 ] || return 0
    local still=()
    for p in "${left[@]}"; do alive "$p" && still+=("$p"); done
    left=("${still[@]}")
    [ ${#left[@]} -gt 0 ] || return 0
    sleep 0.1
  done
  say "pid(s) ${left[*]} did not stop on TERM; KILL"
  kill -KILL "${left[@]}" 2>/dev/null
  sleep 0.2
}

# slurmstepd processes of this cluster: they keep files under $dir open.
our_stepds() {
  local p f
  for p in $(pgrep -x slurmstepd 2>/dev/null); do
    for f in "/proc/$p/cwd" "/proc/$p"/fd/*; do
      case $(readlink "$f" 2>/dev/null) in
        "$dir"/*) echo "$p"; break ;;
      esac
    done
  done
}

descendants() { # pid... -> all their descendants
  local p c
  for p in "$@"; do
    for c in $(pgrep -P "$p" 2>/dev/null); do
      echo "$c"
      descendants "$c"
    done
  done
}

# Job processes of this cluster: under a slurmstepd of ours, or running a
# batch script from our spool dir (orphaned when their slurmstepd died).
our_job_procs() {
  local p
  descendants "$@"
  for p in $(pgrep -f "$dir/spool/" 2>/dev/null); do
    [ "$p" != $$ ] && echo "$p"
  done
}

conf=$dir/etc/slurm.conf
ctld=$(pid_of "$dir/run/slurmctld.pid")
if [ -f "$conf" ] && alive "$ctld" &&
   SLURM_CONF=$conf timeout 5 scontrol ping 2>/dev/null | grep -q UP; then
  jobs=$(SLURM_CONF=$conf timeout 10 squeue -h -o '%A' 2>/dev/null | sort -u)
  if [ -n "$jobs" ]; then
    # shellcheck disable=SC2086 # one job id a word
    SLURM_CONF=$conf timeout 10 scancel $jobs 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(SLURM_CONF=$conf timeout 5 squeue -h -t R,CG -o '%A' 2>/dev/null)" ] && break
      sleep 0.2
    done
  fi
fi

# all at once: each takes a second or two to exit on TERM
mapfile -t stepds < <(our_stepds)
# Jobs that scancel did not end (no slurmctld to ask) and their slurmstepd
# (which ignores TERM while it cannot report to slurmctld): KILL outright.
mapfile -t jobprocs < <(our_job_procs "${stepds[@]}" | sort -u)
[ ${#jobprocs[@]} -eq 0 ] || kill -KILL "${jobprocs[@]}" 2>/dev/null
[ ${#stepds[@]} -eq 0 ] || kill -KILL "${stepds[@]}" 2>/dev/null
stop_pids "$(pid_of "$dir/run/slurmd.pid")" "$ctld" \
  "$(pid_of "$dir/munge/munged.pid")"

if [ "${EHAT_SLURM_KEEP:-0}" = 1 ]; then
  rm -f "$dir/env.sh" "$dir/holders"
  say "stopped; kept $dir"
else
  rm -rf "$dir"
  say "stopped and removed $dir"
fi
exit 0
