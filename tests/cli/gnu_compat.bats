#!/usr/bin/env bats
# GNU parallel compatibility (issue 14): the shell jobs run in, ::::+, -d with :::, --colsep
# trimming, --tagstring escapes, --results/--joblog forms, -s, --header, --env, --nice,
# --plus, --compress.

load helpers

# ------------------------------------------------------------------ the shell

@test "lines that need a shell run in \$SHELL: bash syntax works with SHELL=bash" {
  run env SHELL=/bin/bash "$CONCUR" -k 'cat <(echo {})' ::: a b
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'a\nb')" ]
  run env SHELL=/bin/bash "$CONCUR" 'echo $0' ::: x
  [ "$output" = "/bin/bash x" ]
}

@test "an exported bash function runs as a command, as in GNU parallel" {
  myfunc() { echo "func:$1"; }
  export -f myfunc
  export SHELL=/bin/bash
  same_as_parallel -k myfunc ::: a 'b c'
  run "$CONCUR" -k myfunc ::: a
  [ "$output" = "func:a" ]
  # as the last command of a line too (not exec'd as a program)
  run "$CONCUR" -k 'true; myfunc {}' ::: a
  [ "$output" = "func:a" ]
  # and with no command words: the argument is the command line
  run "$CONCUR" -k ::: 'myfunc z'
  [ "$output" = "func:z" ]
}

@test "without SHELL the lines run with /bin/sh" {
  run env -u SHELL -u PARALLEL_SHELL "$CONCUR" 'echo $0' ::: x
  [ "$status" -eq 0 ]
  [ "$output" = "/bin/sh x" ]
}

@test "PARALLEL_SHELL comes before SHELL" {
  run env SHELL=/bin/sh PARALLEL_SHELL=/bin/bash "$CONCUR" 'echo $0' ::: x
  [ "$output" = "/bin/bash x" ]
}

@test "a shell that cannot be found is an error, as in GNU parallel" {
  run env SHELL=/nonexistent/sh "$CONCUR" echo ::: x
  [ "$status" -eq 255 ]
  [[ $output == *"shell '/nonexistent/sh' not found"* ]]
}

@test "csh-like shells: the lines run with /bin/sh (they are quoted for sh)" {
  run env SHELL=/bin/tcsh "$CONCUR" 'echo $0' ::: x
  [ "$output" = "/bin/sh x" ]
}

# ------------------------------------------------------------------ ::::+

@test "::::+ links every one of its files to the previous group, as GNU parallel" {
  printf 'a\nb\nc\n' >f1
  printf '1\n2\n3\n' >f2
  printf 'x\ny\n' >f3
  run "$CONCUR" -k echo ::: A B ::::+ f1 f2
  [ "$output" = "$(printf 'A a 1\nB b 2')" ]
  same_as_parallel -k echo ::: A B ::::+ f1 f2
  same_as_parallel -k echo :::: f3 ::::+ f1 f2
  same_as_parallel -k echo ::: A B ::::+ f1 ::: Z
  same_as_parallel -k echo :::: f1 ::::+ f2 :::: f3
}

@test ":::+ and ::::+ as the first input source start the first group" {
  printf 'a\nb\nc\n' >f1
  printf '1\n2\n3\n' >f2
  run "$CONCUR" -k echo ::::+ f1 f2
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'a 1\nb 2\nc 3')" ]
  same_as_parallel -k echo ::::+ f1 f2
  same_as_parallel -k echo ::::+ f1 ::: P Q
  same_as_parallel -k echo :::+ a b ::: 1 2
}
