#!/usr/bin/env bats
# Exit status: 0, the number of failed jobs (at most 101), 2 for usage errors, 130 after
# SIGINT, 143 after SIGTERM.

load helpers
bats_require_minimum_version 1.5.0

@test "exit status is 0 when every job succeeds" {
  run "$CONCUR" true ::: a b c
  [ "$status" -eq 0 ]
}

@test "exit status is the number of failed jobs" {
  run "$CONCUR" 'exit {}' ::: 0 1 2 0 3
  [ "$status" -eq 3 ]
}

@test "exit status counts failures as GNU parallel does" {
  same_as_parallel 'exit {}' ::: 0 1 2 0 3 0 255
}

@test "exit status is capped at 101 (150 failing jobs)" {
  seq 150 >in
  run "$CONCUR" -j 0 false <in
  [ "$status" -eq 101 ]
}

@test "an unknown option is a usage error (2) naming the option" {
  run --separate-stderr "$CONCUR" --no-such-option echo ::: a
  [ "$status" -eq 2 ]
  [[ $stderr == *--no-such-option* ]]
  [ -z "$output" ]
}

@test "a bad option value is a usage error (2) naming the option" {
  run --separate-stderr "$CONCUR" --timeout abc echo ::: a
  [ "$status" -eq 2 ]
  [[ $stderr == *timeout* ]]
}

@test "a bad -j value is a usage error (2)" {
  run --separate-stderr "$CONCUR" -j abc echo ::: a
  [ "$status" -eq 2 ]
  [ -n "$stderr" ]
}

@test "an unknown --halt value is a usage error (2) naming the option" {
  run --separate-stderr "$CONCUR" --halt sometime,fail=1 echo ::: a
  [ "$status" -eq 2 ]
  [[ $stderr == *halt* ]]
}

@test "a missing :::: file is an error naming the file" {
  run --separate-stderr "$CONCUR" echo :::: no-such-file
  [ "$status" -ne 0 ]
  [[ $stderr == *no-such-file* ]]
}

# interrupt SIGNAL: start a run, send SIGNAL to concur once a job is running, and set
# INT_RC to concur's exit status.
interrupt() {
  start_bg out err -j2 "touch started; sleep 100.$UNIQ; : {}" ::: a b c
  wait_until 5 test -e started
  kill -"$1" "$BG_PID"
  INT_RC=0
  wait "$BG_PID" || INT_RC=$?
}

@test "exit status is 130 after SIGINT" {
  interrupt INT
  [ "$INT_RC" -eq 130 ]
  assert_no_process "100.$UNIQ"
}

@test "exit status is 143 after SIGTERM" {
  interrupt TERM
  [ "$INT_RC" -eq 143 ]
  assert_no_process "100.$UNIQ"
}
