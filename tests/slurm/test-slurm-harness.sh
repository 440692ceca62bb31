#!/usr/bin/env bash
# test-slurm-harness.sh — checks the test Slurm cluster (tests/slurm/slurm-up.sh)
# does what `ehat-remaster --slurm` relies on (issue 10 item 4):
#   1. a 4-task job array (sbatch --array=0-3) runs every task, and a job
#      with --dependency=afterok:<array> runs after all of them and sees
#      their outputs;
#   2. when one array task fails, the afterok job never runs: it stays
#      pending with Reason=DependencyNeverSatisfied (then it is cancelled).
# Brings the cluster up in EHAT_SLURM_DIR (default /tmp/ehat-slurm-harness,
# its own, so it can run beside other Slurm tests) and down again on exit,
# whatever happens.  Exit 0 pass, 1 fail, 77 only when slurm-up.sh exits 77
# (Slurm cannot be started here; the reason is on stderr).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export EHAT_SLURM_DIR=${EHAT_SLURM_DIR:-/tmp/ehat-slurm-harness}
export EHAT_SLURM_HOLDER=$$
wait_s=${EHAT_SLURM_TEST_TIMEOUT:-120}

work=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ "$rc" != 77 ] && [ -d "$EHAT_SLURM_DIR/log" ]; then
    for f in "$EHAT_SLURM_DIR"/log/slurmctld.log "$EHAT_SLURM_DIR"/log/slurmd.log; do
      [ -s "$f" ] && { echo "----- tail of $f -----"; tail -n 30 "$f"; }
    done
  fi
  bash "$here/slurm-down.sh"
  [ -n "$work" ] && rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

fail() { echo "FAIL: $*"; exit 1; }

bash "$here/slurm-up.sh"
rc=$?
case $rc in
  0) ;;
  77) echo "SKIP: Slurm cannot be started (see above)"; exit 77 ;;
  *) fail "slurm-up.sh exited $rc" ;;
esac
# shellcheck source=/dev/null
source "$EHAT_SLURM_DIR/env.sh"
sinfo

# Job files live where every node sees them (here: the one node).
work=$(mktemp -d /tmp/ehat-slurm-test.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work"/{out,log}

job_field() { # jobid field -> value from scontrol
  scontrol -o show job "$1" 2>/dev/null | tr ' ' '\n' | sed -n "s/^$2=//p" | head -n 1
}

wait_done() { # jobid... : until none of them is pending/running/completing
  local t0=$SECONDS left
  while :; do
    left=$(squeue -h -j "$(IFS=,; echo "$*")" -t PD,R,CG,CF,S -o '%i' 2>/dev/null)
    [ -z "$left" ] && return 0
    [ $((SECONDS - t0)) -lt "$wait_s" ] || { squeue; return 1; }
    sleep 0.5
  done
}

task_script() { # file fail_index
  cat >"$1" <<EOF
#!/bin/bash
i=\$SLURM_ARRAY_TASK_ID
[ "\$i" = "$2" ] && { echo "task \$i fails on purpose" >&2; exit 3; }
echo "task \$i of array \$SLURM_ARRAY_JOB_ID on \$(hostname -s) uid \$(id -u)" >"$work/out/\$1.\$i"
EOF
  chmod +x "$1"
}

# --- 1. array + afterok -------------------------------------------------------
t0=$SECONDS
task_script "$work/task.sh" none
aid=$(sbatch --parsable --array=0-3 -J ehat-arr -o "$work/log/arr_%A_%a.out" \
  -e "$work/log/arr_%A_%a.err" "$work/task.sh" ok) || fail "sbatch --array failed"
aid=${aid%%;*}
cat >"$work/join.sh" <<EOF
#!/bin/bash
for i in 0 1 2 3; do
  grep -q "^task \$i of array $aid " "$work/out/ok.\$i" || { echo "missing output \$i" >&2; exit 1; }
done
echo "joined after $aid as job \$SLURM_JOB_ID" >"$work/marker"
EOF
chmod +x "$work/join.sh"
jid=$(sbatch --parsable -J ehat-join --dependency=afterok:"$aid" \
  -o "$work/log/join_%j.out" "$work/join.sh") || fail "sbatch --dependency failed"
echo "array $aid (4 tasks), join $jid (afterok:$aid)"
wait_done "$aid" "$jid" || fail "array $aid / join $jid not done after ${wait_s}s"
for i in 0 1 2 3; do
  st=$(job_field "${aid}_$i" JobState); ec=$(job_field "${aid}_$i" ExitCode)
  if [ "$st" != COMPLETED ] || [ "$ec" != 0:0 ]; then
    fail "task ${aid}_$i: JobState=$st ExitCode=$ec"
  fi
  grep -q "^task $i of array $aid on .* uid $(id -u)\$" "$work/out/ok.$i" ||
    fail "task $i output: $(cat "$work/out/ok.$i" 2>&1)"
done
st=$(job_field "$jid" JobState)
[ "$st" = COMPLETED ] || fail "join job $jid: JobState=$st; $(cat "$work"/log/join_* 2>&1)"
grep -q "^joined after $aid as job $jid\$" "$work/marker" || fail "no marker from the join job"
echo "ok 1 - array of 4 + afterok join: $(cat "$work/marker") ($((SECONDS - t0)) s)"

# --- 2. a failing task: afterok never satisfied ---------------------------------
t0=$SECONDS
task_script "$work/task2.sh" 2
bid=$(sbatch --parsable --array=0-3 -J ehat-arr2 -o "$work/log/arr2_%A_%a.out" \
  -e "$work/log/arr2_%A_%a.err" "$work/task2.sh" bad) || fail "sbatch --array (2) failed"
bid=${bid%%;*}
kid=$(sbatch --parsable -J ehat-join2 --dependency=afterok:"$bid" \
  -o "$work/log/join2_%j.out" --wrap "touch '$work/marker2'") || fail "sbatch (2) failed"
echo "array $bid (task 2 fails), join $kid (afterok:$bid)"
wait_done "$bid" || fail "array $bid not done after ${wait_s}s"
for i in 0 1 3; do
  [ "$(job_field "${bid}_$i" JobState)" = COMPLETED ] || fail "task ${bid}_$i not COMPLETED"
done
st=$(job_field "${bid}_2" JobState); ec=$(job_field "${bid}_2" ExitCode)
if [ "$st" != FAILED ] || [ "$ec" != 3:0 ]; then
  fail "task ${bid}_2: JobState=$st ExitCode=$ec (want FAILED 3:0)"
fi
reason=
for _ in $(seq $((wait_s * 2))); do
  reason=$(job_field "$kid" Reason)
  [ "$reason" = DependencyNeverSatisfied ] && break
  sleep 0.5
done
st=$(job_field "$kid" JobState)
if [ "$st" != PENDING ] || [ "$reason" != DependencyNeverSatisfied ]; then
  fail "join $kid: JobState=$st Reason=$reason (want PENDING DependencyNeverSatisfied)"
fi
scancel "$kid" || fail "scancel $kid"
for _ in $(seq 20); do
  st=$(job_field "$kid" JobState)
  [ "$st" = CANCELLED ] && break
  sleep 0.5
done
[ "$st" = CANCELLED ] || fail "join $kid: JobState=$st after scancel"
[ ! -e "$work/marker2" ] || fail "the afterok job ran although task 2 failed"
echo "ok 2 - failed task ${bid}_2: join $kid pending with DependencyNeverSatisfied, cancelled ($((SECONDS - t0)) s)"

echo "PASS"
exit 0
