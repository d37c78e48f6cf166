#!/usr/bin/env bats
# Jobs that misbehave: missing commands, signals, huge or binary output, closed stdout,
# ignored SIGTERM; concur interrupted mid-run and resumed.

load helpers
bats_require_minimum_version 1.5.0

@test "a command not found fails that job only; the others run" {
  run --separate-stderr "$CONCUR" -k -j1 '{} arg' ::: echo no-such-command-$UNIQ echo
  [ "$status" -eq 1 ]
  [ "$output" = "$(printf 'arg\narg')" ]
  [[ $stderr == *no-such-command-$UNIQ* ]]
}

@test "a job killed by a signal is logged with its signal number" {
  "$CONCUR" --joblog jl 'kill -9 $$; : {}' ::: x || true
  [ "$(tail -n1 jl | cut -f8)" -eq 9 ]
}

@test "a job killed by a signal counts as failed" {
  run "$CONCUR" 'kill -9 $$; : {}' ::: x y
  [ "$status" -eq 2 ]
}

@test "10 MB of output per job arrives exactly (2 jobs)" {
  "$CONCUR" -j2 'head -c 10000000 /dev/zero | tr "\0" {}' ::: a b >out
  [ "$(wc -c <out)" -eq 20000000 ]
  [ "$(tr -d a <out | wc -c)" -eq 10000000 ]
  # grouped: each job's 10 MB is in one piece
  [[ "$(tr -s ab <out)" == ab || "$(tr -s ab <out)" == ba ]]
}

@test "binary output with NUL bytes is passed through exactly" {
  head -c 300000 /dev/urandom >bin
  printf '\0\0\n\0' >>bin
  "$CONCUR" cat ::: bin >out
  cmp bin out
}

@test "binary output is exact with -k and several jobs" {
  for i in 1 2 3; do head -c 100000 /dev/urandom >bin$i; done
  cat bin1 bin2 bin3 >want
  "$CONCUR" -k -j3 cat ::: bin1 bin2 bin3 >out
  cmp want out
}

@test "a job that closes stdout and keeps running does not hang concur" {
  t0=$EPOCHREALTIME
  run --separate-stderr timeout -k 1 10 "$CONCUR" 'exec >&-; sleep 0.5; echo done {} >&2' ::: x
  t1=$EPOCHREALTIME
  [ "$status" -eq 0 ]
  [ "$stderr" = "done x" ]
  elapsed_between "$t0" "$t1" 0.5 3
}

@test "a job that ignores SIGTERM is killed by the rest of --termseq" {
  t0=$EPOCHREALTIME
  run timeout -k 1 20 "$CONCUR" --timeout 0.3 --termseq TERM,200,KILL,25 \
    sh -c "'trap \"\" TERM; sleep 30.$UNIQ'" ::: x
  t1=$EPOCHREALTIME
  [ "$status" -ne 0 ] && [ "$status" -ne 124 ]
  elapsed_between "$t0" "$t1" 0.3 2.5
  assert_no_process "30.$UNIQ"
}

no_zombie_children() { [ -z "$(zombie_children "$@")" ]; }

@test "concur reaps its finished jobs while others still run" {
  # "last" runs first and keeps running while the 8 quick jobs come and go in slot 2.
  # "last" outlives the checks even on a loaded machine; the test ends it.
  start_bg out err -j2 "case {} in last) sleep 20.$UNIQ;; *) echo {} >> quick;; esac" \
    ::: last 1 2 3 4 5 6 7 8
  wait_until 5 at_least_lines 8 quick
  reaped=0
  wait_until 2 no_zombie_children "$BG_PID" || reaped=$?
  zombies=$(zombie_children "$BG_PID")
  kill "$BG_PID" || true; wait "$BG_PID" || true
  [ "$reaped" -eq 0 ] || { echo "zombie children of concur: $zombies"; false; }
}

@test "SIGINT mid-run, then --resume: every job completes exactly once, nothing left over" {
  mkdir tmp
  export TMPDIR=$BATS_TEST_TMPDIR/tmp
  before=$(ls -A "$TMPDIR")
  N=20
  # The completion marker is written as the job's last step.
  job="sleep 0.3$UNIQ; echo {} >> done"
  start_bg out err -j4 --joblog jl "$job" ::: $(seq $N)
  wait_until 5 at_least_lines 2 done
  kill -INT "$BG_PID"
  rc=0; wait "$BG_PID" || rc=$?
  [ "$rc" -eq 130 ]
  [ "$(line_count done)" -lt "$N" ]
  assert_no_process "0.3$UNIQ"
  zombies=$(zombie_children "$BG_PID" "$$" "$BASHPID")
  [ -z "$zombies" ] || { echo "zombies: $zombies"; false; }

  "$CONCUR" -j4 --joblog jl --resume "$job" ::: $(seq $N)
  dups=$(sort -n done | uniq -d | paste -sd' ')
  [ -z "$dups" ] || { echo "completed twice: $dups"; false; }
  [ "$(sort -n done | paste -sd' ')" = "$(seq $N | paste -sd' ')" ]
  assert_no_process "0.3$UNIQ"
  [ "$(ls -A "$TMPDIR")" = "$before" ] || { echo "left in TMPDIR: $(ls -A "$TMPDIR")"; false; }
}
