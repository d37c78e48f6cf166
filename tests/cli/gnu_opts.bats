#!/usr/bin/env bats
# Small GNU parallel options accepted for compatibility: -P, -r, -t, -v, -I, --link, -N and -L
# without --pipe, -n 0.

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

@test "-t prints each command line on stderr, as GNU parallel does" {
  need_parallel
  "$CONCUR" -k -t echo ::: 'a b' c '$x' 2>c_err >c_out
  parallel --will-cite -k -t echo ::: 'a b' c '$x' 2>p_err >p_out </dev/null
  cmp c_err p_err
  cmp c_out p_out
}

@test "-v prints each command line before its output" {
  same_as_parallel -k -v echo ::: 'a b' c
  same_as_parallel -k -v --tag echo ::: a b
  same_as_parallel -k -v 'echo {}; echo {} again' ::: a b
}

@test "-t and -v together" {
  need_parallel
  "$CONCUR" -t -v echo ::: a 2>c_err >c_out
  parallel --will-cite -t -v echo ::: a 2>p_err >p_out </dev/null
  cmp c_err p_err
  cmp c_out p_out
}

@test "-v with --json prints only the JSON" {
  run "$CONCUR" -v --json echo ::: a
  [ "$status" -eq 0 ]
  [[ $output == "{"* ]]
  [ "$(printf '%s\n' "$output" | wc -l)" -eq 1 ]
}

@test "-I STR replaces {} as GNU parallel does" {
  same_as_parallel -k -I XX echo XX ::: a b
  same_as_parallel -k -I XX echo XX {} {.} {1} '{1.}' {#} ::: d/a.b
  same_as_parallel -k -I XX --tagstring 'XX {}' echo ::: a b
  same_as_parallel -k -I XX echo ::: a b
  same_as_parallel -k --replace=@@ 'echo @@ | tr a A' ::: a b
}

@test "-I '' is refused" {
  run "$CONCUR" -I '' echo ::: a
  [ "$status" -eq 2 ]
  [[ $output == *"bad value for -I: ''"* ]]
}

@test "--link takes the groups in step, wrapping the shorter ones, as GNU parallel" {
  same_as_parallel -k --link echo ::: a b c ::: 1 2 3
  same_as_parallel -k --link echo ::: a b c ::: 1 2
  same_as_parallel -k --link echo ::: a b c ::: 1 2 3 4 5
  same_as_parallel -k --xapply echo ::: a b c ::: 1 2 ::: x y z w
  printf '1\n2\n' >nums
  printf 'a\nb\nc\n' >letters
  same_as_parallel -k --link echo :::: letters nums
  same_as_parallel -k --link echo {2} {1} ::: a b c :::: nums
}

@test "--link with an empty group runs nothing" {
  run "$CONCUR" --link echo ::: a b ::: ::: 1
  [ "$status" -eq 0 ]
  [ -z "$output" ]
}

@test "--link with one input source changes nothing" {
  printf 'a\nb\n' | "$CONCUR" -k --link echo >out
  [ "$(cat out)" = "$(printf 'a\nb')" ]
}

@test "--dry-run with -t prints the commands on stderr too" {
  need_parallel
  "$CONCUR" -k --dry-run -t echo ::: a b 2>c_err >c_out
  parallel --will-cite -k --dry-run -t echo ::: a b 2>p_err >p_out </dev/null
  cmp c_err p_err
  cmp c_out p_out
  [ "$(cat c_out)" = "$(printf 'echo a\necho b')" ]
}

@test "-N N / -L N without --pipe: N arguments a command, {} standing for each (as -X), as GNU parallel" {
  same_as_parallel -k -N2 echo {1}-{2} ::: a b c d e
  same_as_parallel -k -N2 echo x{}y ::: a b c d e
  same_as_parallel -k -N2 -m echo x{}y ::: a b c
  same_as_parallel -k -N3 echo ::: a b c d
  same_as_parallel -k -L2 echo x{}y ::: a b c
  same_as_parallel -k -N1 -L1 -v echo ::: a b
  seq 19 >in
  same_as_parallel --stdin in -k -N 10 echo a{}b
  run "$CONCUR" -k -N2 echo x{}y ::: a b c
  [ "$output" = "$(printf 'xay xby\nxcy')" ]
}

@test "-n 0 / -N 0 / -L 0: each command reads an argument and is given none, as GNU parallel" {
  run "$CONCUR" -k -n0 echo z {} ::: a b
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'z\nz')" ]
  run "$CONCUR" -k -N0 echo x{}y ::: a b c
  [ "$output" = "$(printf 'xy\nxy\nxy')" ]
  run "$CONCUR" -k -L0 --tag echo w ::: a
  [ "$output" = "$(printf '\tw')" ]
  seq 2 >in
  same_as_parallel --stdin in -k -N0 echo N0
  same_as_parallel -k -n0 echo {#} ::: a b c
}

@test "-r with --pipe: a block of blanks only runs nothing, as GNU parallel" {
  run bash -c 'echo | "$CONCUR" -r -j2 -N1 --pipe "echo ran; cat"'
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  run bash -c 'echo | "$CONCUR" -j2 -N1 --pipe "echo ran; cat"'
  [ "$output" = "$(printf 'ran\n')" ]
  printf 'a\n \n\t\nb\n' >in
  same_as_parallel --stdin in -k -r -N1 --pipe 'echo {#}; cat'
  run "$CONCUR" -k -r -N1 --pipe 'echo {#}; cat' <in
  [ "$output" = "$(printf '1\na\n2\nb')" ]
}
