#!/usr/bin/env bats
# Small GNU parallel options accepted for compatibility: -P, -r.

load helpers

@test "-P N is -j N" {
  run "$CONCUR" -u -P 1 'echo start {}; sleep 0.2; echo end {}' ::: a b
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'start a\nend a\nstart b\nend b')" ]
}

@test "--max-procs takes a value as -j does" {
  run "$CONCUR" -k --max-procs=2 echo ::: a b c
  [ "$output" = "$(printf 'a\nb\nc')" ]
  run "$CONCUR" -P x echo ::: a
  [ "$status" -eq 2 ]
  [[ $output == *"bad value for -P: 'x'"* ]]
}

@test "-r: empty standard input runs nothing" {
  run "$CONCUR" -r echo ran </dev/null
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "-r skips blank lines as GNU parallel does" {
  printf '  \n\na\n \t\nb c\n' >in
  same_as_parallel --stdin in -k -r echo '[{}]'
  same_as_parallel -k -r echo ::: a '' ' ' b
  same_as_parallel -k -r echo ::: '' ::: ' ' x
}

@test "without -r blank lines are arguments" {
  printf '  \n\na\n' >in
  same_as_parallel --stdin in -k echo '[{}]'
}
