#!/usr/bin/env bats
# -j, --timeout, --termseq, --retries, --halt, --delay.
# Timing checks are tight on the lower bound and loose on the upper one. CTest runs this
# file alone (RUN_SERIAL) so that other tests do not load the machine meanwhile.

load helpers

# A job that logs its start and end to the file "log" (see max_overlap).
OVERLAP_JOB='echo S >> log; sleep 0.3; echo E >> log; : {}'

@test "-j2 runs two jobs at a time: 4 jobs of 0.3 s take 0.6 s" {
  t0=$EPOCHREALTIME
  "$CONCUR" -j2 'sleep 0.3; : {}' ::: 1 2 3 4
  t1=$EPOCHREALTIME
  elapsed_between "$t0" "$t1" 0.6 1.2
}

@test "-j2 never runs more than two jobs at once" {
  "$CONCUR" -j2 "$OVERLAP_JOB" ::: 1 2 3 4 5 6
  [ "$(max_overlap log)" -eq 2 ]
}

@test "-j 0 runs every job at once" {
  "$CONCUR" -j 0 "$OVERLAP_JOB" ::: $(seq 12)
  [ "$(max_overlap log)" -eq 12 ]
}

@test "-j 0: 12 jobs of 0.5 s take about 0.5 s" {
  t0=$EPOCHREALTIME
  "$CONCUR" -j 0 'sleep 0.5; : {}' ::: $(seq 12)
  t1=$EPOCHREALTIME
  elapsed_between "$t0" "$t1" 0.5 1.3
}

@test "-j 50% runs half as many jobs as there are CPUs (rounded up)" {
  ncpu=$(getconf _NPROCESSORS_ONLN)
  want=$(( (ncpu + 1) / 2 ))
  "$CONCUR" -j 50% "$OVERLAP_JOB" ::: $(seq $((want * 2 + 1)))
  [ "$(max_overlap log)" -eq "$want" ]
}

@test "without -j, one job runs per CPU" {
  ncpu=$(getconf _NPROCESSORS_ONLN)
  "$CONCUR" "$OVERLAP_JOB" ::: $(seq $((ncpu * 2)))
  [ "$(max_overlap log)" -eq "$ncpu" ]
}

@test "--timeout kills a job that runs too long, and it counts as failed" {
  t0=$EPOCHREALTIME
  run "$CONCUR" --timeout 0.5 'sleep {}' ::: 100.$UNIQ
  t1=$EPOCHREALTIME
  [ "$status" -eq 1 ]
  elapsed_between "$t0" "$t1" 0.5 2.5
  assert_no_process "100.$UNIQ"
}

@test "--timeout leaves jobs that finish in time alone" {
  run "$CONCUR" -k --timeout 1 'sleep {}; echo done {}' ::: 0.1 100.$UNIQ 0.2
  [ "$status" -eq 1 ]
  [ "$(printf '%s\n' "$output" | grep '^done' | paste -sd' ')" = "done 0.1 done 0.2" ]
}

@test "--timeout kills the job's grandchildren too" {
  run "$CONCUR" --timeout 0.5 sh -c "'sleep 101.$UNIQ & sleep 101.$UNIQ; wait'" ::: x
  [ "$status" -eq 1 ]
  assert_no_process "101.$UNIQ"
}

@test "--timeout 0 means no timeout" {
  run "$CONCUR" --timeout 0 'sleep 0.3; echo {}' ::: ok
  [ "$status" -eq 0 ]
  [ "$output" = ok ]
}

@test "--termseq sends its first signal first" {
  run "$CONCUR" --timeout 0.3 --termseq INT,1000,KILL,25 \
    "trap 'echo got-int > marker; exit 7' INT; sleep 30.$UNIQ >/dev/null 2>&1 & wait; : {}" ::: x
  [ "$status" -ne 0 ]
  [ "$(cat marker)" = got-int ]
}

# Fails on its first two attempts, succeeds on the third; "c" counts the attempts.
RETRY_JOB=': {}; n=$(cat c 2>/dev/null || echo 0); n=$((n+1)); echo $n > c; [ $n -ge 3 ]'

@test "--retries 3 runs a failing job until it succeeds on its third try" {
  run "$CONCUR" --retries 3 "$RETRY_JOB" ::: x
  [ "$status" -eq 0 ]
  [ "$(cat c)" -eq 3 ]
}

@test "--retries 2 gives up after two tries" {
  run "$CONCUR" --retries 2 "$RETRY_JOB" ::: x
  [ "$status" -eq 1 ]
  [ "$(cat c)" -eq 2 ]
}

@test "--halt now,fail=1 starts no job after the first failure; exit status is its" {
  same_as_parallel -j1 --halt now,fail=1 'echo {}; exit {}' ::: 0 0 3 0 0
}

@test "--halt now,fail=1 kills the running jobs" {
  t0=$EPOCHREALTIME
  run "$CONCUR" -j2 --halt now,fail=1 'sleep {}; exit 1' ::: 100.$UNIQ 0.2
  t1=$EPOCHREALTIME
  [ "$status" -ne 0 ]
  elapsed_between "$t0" "$t1" 0.2 2
  assert_no_process "100.$UNIQ"
}

@test "--halt soon,fail=1 starts no job after the first failure" {
  same_as_parallel -j1 --halt soon,fail=1 'echo {}; exit {}' ::: 0 0 3 0 0
}

@test "--halt soon,fail=1 lets the running jobs finish" {
  same_as_parallel --sort -j2 --halt soon,fail=1 \
    'sleep {}; echo {}; case {} in 0.1) exit 1;; esac' ::: 0.5 0.1 0.2 0.3
}

@test "--halt now,success=1 stops at the first success" {
  same_as_parallel -j1 --halt now,success=1 'echo {}; exit {}' ::: 1 2 0 4 5
}

@test "--delay spaces the job starts" {
  t0=$EPOCHREALTIME
  "$CONCUR" -j3 --delay 0.3 'true {}' ::: 1 2 3
  t1=$EPOCHREALTIME
  elapsed_between "$t0" "$t1" 0.6 1.5
}
