#!/usr/bin/env bats
# Input sources: ::: groups, :::+, ::::, -a, stdin, -0, -d, --colsep.
# Outputs are compared with GNU parallel's (sorted where the order is not defined).

load helpers

@test "::: gives one job per argument" {
  same_as_parallel --sort echo ::: a b c
}

@test "several ::: groups give the cartesian product" {
  same_as_parallel --sort echo ::: a b ::: 1 2 3
}

@test "the cartesian product runs in input order with -k" {
  same_as_parallel -k echo ::: a b ::: 1 2 ::: x y
}

@test ":::+ links a group to the previous one element by element" {
  same_as_parallel -k echo ::: a b c :::+ 1 2 3
}

@test ":::+ after a cartesian product links to the last group" {
  same_as_parallel -k echo ::: a b ::: 1 2 :::+ x y
}

@test ":::: reads arguments from a file, one per line" {
  printf 'one\ntwo words\nthree\n' >args
  same_as_parallel -k echo :::: args
}

@test ":::: and ::: groups combine into a cartesian product" {
  printf 'f1\nf2\n' >args
  same_as_parallel -k echo ::: a b :::: args
}

@test "-a reads arguments from a file" {
  printf 'one\ntwo words\nthree\n' >args
  same_as_parallel -k -a args echo
}

@test "stdin lines are the input when no input source is given" {
  printf 'one\ntwo words\nthree\n' >in
  same_as_parallel --stdin in -k echo
}

@test "stdin is read in full: 1000 lines give 1000 jobs" {
  seq 1000 >in
  "$CONCUR" -k echo <in >out
  cmp in out
}

@test "-0 splits stdin on NUL bytes" {
  printf 'a\0b c\0x\ny\0' >in
  same_as_parallel --stdin in -k -0 'printf "<%s>\\n"'
}

@test "--null is -0" {
  printf 'a\0b c\0' >in
  same_as_parallel --stdin in -k --null echo
}

@test "-d splits the input on the given delimiter" {
  printf 'a,b c,d' >in
  same_as_parallel --stdin in -k -d , echo
}

@test "--colsep splits each input line into {1} {2}" {
  printf 'a,1\nb c,2\n' >in
  same_as_parallel --stdin in -k --colsep , echo '{2}-{1}'
}

@test "an empty input runs no job and exits 0" {
  : >in
  same_as_parallel --stdin in echo
  [ ! -s .concur.out ]
}
