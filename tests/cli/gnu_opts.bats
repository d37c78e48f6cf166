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

# ------------------------------------------------------------------ GNU parallel's other names

@test "--verbose is -t, --dryrun --dry-run, --jl --joblog, --res/--result --results" {
  same_as_parallel -k --verbose echo ::: a b
  "$CONCUR" -k --verbose echo ::: a 2>err >/dev/null
  [ "$(cat err)" = "echo a" ]
  [ "$("$CONCUR" --dryrun echo ::: a)" = "echo a" ]
  "$CONCUR" --jl jl echo ::: a >/dev/null
  [ "$(tail -n1 jl | cut -f9)" = "echo a" ]
  "$CONCUR" --res r1 echo ::: a >/dev/null
  "$CONCUR" --result r2 echo ::: a >/dev/null
  [ "$(cat r1/1/a/stdout)" = a ] && [ "$(cat r2/1/a/stdout)" = a ]
}

@test "--halt-on-error is --halt; --linebuffer is --line-buffer; aliases are no ambiguous prefix" {
  "$CONCUR" -j1 --halt-on-error now,fail=1 'echo {}; exit {}' ::: 0 1 0 >out 2>/dev/null || rc=$?
  [ "$rc" -eq 1 ] && [ "$(cat out)" = "$(printf '0\n1')" ]
  same_as_parallel -k --linebuffer echo ::: a b
  # --line is the prefix of --line-buffer and of --linebuffer: the same option
  [ "$("$CONCUR" -k --line echo ::: a)" = a ]
}

@test "--arg-sep / --argsep SEP stand for :::" {
  same_as_parallel -k --arg-sep .--- -v .--- 'echo a' 'echo b'
  same_as_parallel -k --argsep ,, echo ,, a b ,, 1 2
  same_as_parallel -k --arg-sep ,, echo ,, a b ,,+ 1 2
  same_as_parallel -k --arg-sep ,, echo ::: a
}

@test "-E STR ends each input source at a line that is STR (-eSTR, --eof=STR)" {
  same_as_parallel -k -E ole echo ::: foo ole bar
  seq 1 10 >in
  same_as_parallel --stdin in -k -E 5 echo :::: - ::: 2 3 4 5 6 :::: in
  same_as_parallel --stdin in -k -E 3 echo :::: - ::: 3 4 :::: in
}

@test "-eSTR and --eof=STR are -E STR" {
  seq 1 10 >in
  same_as_parallel --stdin in -k -e4 echo
  same_as_parallel --stdin in -k --eof=4 echo
  same_as_parallel -k -d , -E b echo ::: a,b,c
  # -E reaches a file counted for --bar too
  "$CONCUR" -k -E 3 --bar echo :::: in >out 2>/dev/null
  [ "$(cat out)" = "$(seq 2)" ]
}

@test "-i is -I {}; -iSTR and --replace=STR are -I STR; --replace alone is -I {}" {
  printf 'a\nEND\nb\n' >in
  same_as_parallel --stdin in -k -i -eEND echo repl{.}ce
  same_as_parallel --stdin in -k --replace -eEND echo repl{.}ce
  same_as_parallel -k -iXX echo XX ::: a b
  same_as_parallel -k --replace=XX echo XX ::: a b
}

@test "-l N / --max-lines N are -L N; -l alone and -l0 are -L 1" {
  seq 5 >in
  same_as_parallel --stdin in -k -l0 echo l0
  same_as_parallel --stdin in -k -l echo l
  same_as_parallel --stdin in -k -l 2 echo l
}

@test "--max-lines N / --max-lines=N are -L N, with --pipe too" {
  seq 5 >in
  same_as_parallel --stdin in -k --max-lines 3 echo l
  same_as_parallel --stdin in -k --max-lines=2 echo l
  same_as_parallel --stdin in -k --pipe -l 2 'cat; echo end'
}

@test "-L without --pipe: a line ending in a blank goes on to the next, as xargs" {
  printf 'foo\n\nole \nbar\nquux\n' >in
  same_as_parallel --stdin in -kr -L2 echo
  same_as_parallel -kr -L2 echo ::: foo '' 'ole ' bar quux
}

@test "-L without --pipe: continued lines with -E and --max-lines; -N counts arguments" {
  printf 'foo\n\nole \nbar\nquux\n' >in
  same_as_parallel --stdin in -kr -L2 -E bar echo
  printf '> \n> \n>\n' >in2
  same_as_parallel --stdin in2 --max-lines 3 echo
  # -N counts arguments, blanks or not
  same_as_parallel --stdin in -k -N2 echo
}

@test "--shuf runs every job once, in a random order" {
  "$CONCUR" --shuf -j1 echo ::: {1..50} ::: a b >out
  [ "$(sort out)" = "$("$CONCUR" -k echo ::: {1..50} ::: a b | sort)" ]
  [ "$(cat out)" != "$("$CONCUR" -k echo ::: {1..50} ::: a b)" ] # (1 chance in 100!)
  run "$CONCUR" --shuf echo </dev/null
  [ "$status" -eq 0 ] && [ -z "$output" ]
  seq 3 | "$CONCUR" --shuf --bar echo >out 2>/dev/null
  [ "$(sort out)" = "$(seq 3)" ]
}

@test "--dnr --bnr --er --bner (and their long names) stand for {//} {/} {.} {/.}" {
  same_as_parallel -k --dnr II echo II {} ::: a a/b a/b/c
  same_as_parallel -k --dirnamereplace II echo II ::: a/b
  same_as_parallel -k --bnr FOO echo FOO ::: /a/b.c a/b.c b.c /a/b a/b b
  for o in --bnr --er --bner; do
    same_as_parallel -j1 -k -X $o FOO echo FOO ::: /a/b.c a/b.c b.c /a/b a/b b
  done
  # the long names are the same options
  for o in basename:bnr extension:er basenameextension:bner; do
    [ "$("$CONCUR" -k --${o%%:*}replace FOO echo FOO ::: /a/b.c a/b)" = \
      "$("$CONCUR" -k --${o#*:} FOO echo FOO ::: /a/b.c a/b)" ]
  done
}

@test "--shellquote prints each command line as one quoted word, running nothing" {
  same_as_parallel -k --shellquote ::: 'a b' "it's" plain
  same_as_parallel -k --shellquote echo {} x ::: 'a b' c
  same_as_parallel -0 --shellquote ::: "$PWD/x y"
  # what it prints is one shell word: the line as it was
  [ "$(eval printf %s "$("$CONCUR" --shellquote echo ::: "a 'b' \$HOME")")" = "echo 'a '\"'\"'b'\"'\"' \$HOME'" ]
  run "$CONCUR" --shellquote 'touch ran' ::: x
  [ ! -e ran ]
}

@test "--wd DIR runs the jobs in DIR (made if missing); --wd ... in a directory of their own" {
  run "$CONCUR" --wd "$PWD/new/dir" 'pwd; echo "$OLDPWD"; : {}' ::: x
  [ "$output" = "$(printf '%s\n%s' "$PWD/new/dir" "$PWD")" ]
  run "$CONCUR" --wd / 'pwd; : {}' ::: x
  [ "$output" = / ]
  mkdir home
  HOME=$PWD/home run "$CONCUR" -k --wd ... 'pwd; touch file; : {}' ::: a b
  [[ ${lines[0]} == "$PWD/home/.parallel/tmp/"*-1 && ${lines[1]} == "$PWD/home/.parallel/tmp/"*-2 ]]
  # each one removed once its job is over
  [ -z "$(ls home/.parallel/tmp)" ]
}

@test "--rrs takes --recend / --recstart out of the blocks" {
  echo 'a+b' >in
  same_as_parallel --stdin in -k --pipe --rrs --recend '+' -N1 'cat; echo end'
  printf 'begin\nx\nend\nbegin\ny\nend\n' >in2
  same_as_parallel --stdin in2 -k --pipe --rrs --recstart 'begin\n' --recend 'end\n' -N1 'cat; echo END'
  same_as_parallel --stdin in2 -k --pipe --remove-rec-sep --recstart 'begin\n' 'cat; echo END'
  run "$CONCUR" --rrs echo ::: a
  [ "$status" -eq 2 ] && [[ $output == *"--rrs needs --pipe"* ]]
}

@test "--regexp: --recend and --recstart are regular expressions" {
  printf 'a1b2c3d\n' >in
  same_as_parallel --stdin in -k --pipe --regexp --recend '[0-9]' -N1 'cat; echo'
  same_as_parallel --stdin in -k --pipe --rrs --regexp --recend '[0-9]' -N1 'cat; echo'
  printf 'a\nb\nc\n' >in2
  same_as_parallel --stdin in2 -k --pipe --regexp --recend '^b' -N1 'cat; echo END'
}

@test "--regexp: -N counts from the first separator of the input, as GNU parallel" {
  printf 'x5454545454' >in3
  same_as_parallel --stdin in3 -k -N2 --regexp --pipe --recstart 4 --recend 5 'cat; echo "<END>"'
  seq 54000 56000 >in4
  same_as_parallel --stdin in4 -k -N100 --regexp --pipe --recstart 4 --recend 5 wc
  [ "$("$CONCUR" -k --pipe --block 1k --regexp --recstart '[0-9]' cat <in4 | md5sum)" = "$(md5sum <in4)" ]
  run "$CONCUR" --pipe --regexp --recend '(' cat </dev/null
  [ "$status" -ne 0 ] && [[ $output == *"regular expression"* ]]
}

@test "--files: each job's output in a file of its own, its name printed" {
  mkdir t
  "$CONCUR" -k --tmpdir t --files --tag 'echo out {}; echo err {} >&2' ::: a b >names 2>err
  [ "$(wc -l <names)" -eq 2 ] && [ "$(ls t | wc -l)" -eq 2 ]
  [[ $(head -n1 names) == a$'\t'"t/par"?????".par" ]]
  [ "$(cat "$(head -n1 names | cut -f2)")" = "out a" ]
  [ "$(cat "$(tail -n1 names | cut -f2)")" = "out b" ]
  [ "$(sort err)" = "$(printf 'a\terr a\nb\terr b')" ]
  # with --pipe: a file a block; --dry-run makes none
  mkdir t2 t3
  seq 500 | TMPDIR=$PWD/t2 "$CONCUR" -j10 --pipe --block 1k --files wc >/dev/null
  [ "$(ls t2 | wc -l)" -eq 2 ]
  seq 500 | "$CONCUR" --tmpdir t3 -j10 --pipe --block 1k --files --dry-run wc >/dev/null
  [ -z "$(ls t3)" ]
}

@test "--retry-failed runs again the joblog's failed jobs, by their logged command lines" {
  "$CONCUR" -k --jl jl 'echo {}; [ {} != b ] && [ {} != d ]' ::: a b c d >/dev/null || true
  run "$CONCUR" -k --retry-failed --jl jl 'echo not run' ::: x y
  [ "$status" -eq 2 ] && [ "$output" = "$(printf 'b\nd')" ]
  [ "$(tail -n2 jl | cut -f1,7)" = "$(printf '2\t1\n4\t1')" ]
  # a Seq the joblog lacks is not run; a command with newlines is run as it was
  printf 'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand\n' >jl2
  printf '1\t:\t0\t0\t0\t0\t1\t0\techo "x\0y"\n3\t:\t0\t0\t0\t0\t0\t0\techo z\n' >>jl2
  run "$CONCUR" --retry-failed --jl jl2 echo ::: q
  [ "$status" -eq 0 ] && [ "$output" = "$(printf 'x\ny')" ]
  # without a joblog to read: a --resume-failed run of the command line
  run "$CONCUR" -k --retry-failed --jl jl3 echo ::: q r
  [ "$output" = "$(printf 'q\nr')" ]
  run "$CONCUR" --retry-failed echo ::: q
  [ "$status" -eq 2 ]
}

@test "--ctag / --ctagstring: --tag / --tagstring in a colour of the job's, reset at each line end" {
  run "$CONCUR" --ctag echo ::: 'a b'
  [[ $output == $'\e[48;5;'[0-9][0-9][0-9]';38;5;'[0-9][0-9][0-9]$'m\e[K'"a b"$'\t'"a b"$'\e[m' ]]
  run "$CONCUR" --ctagstring 'I{1}\tB' 'echo x; echo y; : {}' ::: 1
  [ "${#lines[@]}" -eq 2 ]
  [[ ${lines[0]} == $'\e[48;5;'*$'m\e[K'"I1"$'\t'"B"$'\t'"x"$'\e[m' ]]
  [[ ${lines[1]} == $'\e[48;5;'*$'m\e[K'"I1"$'\t'"B"$'\t'"y"$'\e[m' ]]
  # as wide as GNU parallel's
  [ "$("$CONCUR" --ctag echo ::: 1 ::: a | wc -c)" -eq 34 ]
  # jobs get different colours
  [ "$("$CONCUR" --ctag echo ::: a b c d | cut -c1-20 | sort -u | wc -l)" -eq 4 ]
}

@test "-J / --profile NAME: options from a profile, before the command line's own" {
  mkdir -p home/.parallel
  echo '--tagstring foo' >home/.parallel/prof
  printf '# a comment\n\n-k\n--tagstring "a b"\n' >local_prof
  [ "$(PARALLEL_HOME= HOME=$PWD/home "$CONCUR" -J prof echo ::: x)" = $'foo\tx' ]
  # the command line's options come after: they win
  [ "$(PARALLEL_HOME= HOME=$PWD/home "$CONCUR" --tagstring bar -J prof echo ::: x)" = $'bar\tx' ]
  [ "$(PARALLEL_HOME= HOME=$PWD/home "$CONCUR" --profile ./local_prof echo ::: x y)" = $'a b\tx\na b\ty' ]
  [ "$(PARALLEL_HOME=$PWD/home/.parallel "$CONCUR" -Jprof echo ::: x)" = $'foo\tx' ]
  # after the command it is a word of the command
  [ "$(PARALLEL_HOME= HOME=$PWD/home "$CONCUR" echo -J prof ::: x)" = "-J prof x" ]
  run "$CONCUR" -J ./no-such-profile echo ::: x
  [ "$status" -eq 2 ] && [[ $output == *"cannot read the profile './no-such-profile'"* ]]
  echo '--tag; rm -rf x' >bad_prof
  run "$CONCUR" -J ./bad_prof echo ::: x
  [ "$status" -eq 2 ] && [[ $output == *"bad_prof', line 1"* ]]
}

@test "under the name parallel: \$PARALLEL and the config files, in GNU parallel's order" {
  mkdir -p bin "$PARALLEL_HOME"
  ln -s "$CONCUR" bin/parallel
  # $PARALLEL's words come before the command line's (a leading space is nothing)
  CONCUR=$PWD/bin/parallel PARALLEL=' -v' same_as_parallel echo ::: 'space in envvar OK'
  [ "$(PARALLEL=' -v' bin/parallel echo ::: x)" = $'echo x\nx' ]
  [ "$(PARALLEL='--tagstring "a b"' bin/parallel --tagstring c echo ::: x)" = $'c\tx' ]
  # the user's config, then $PARALLEL, then the command line
  printf '# defaults\n-k\n--tagstring cfg\n' >"$PARALLEL_HOME/config"
  [ "$(bin/parallel echo ::: x y)" = $'cfg\tx\ncfg\ty' ]
  CONCUR=$PWD/bin/parallel same_as_parallel echo ::: x y
  [ "$(PARALLEL='--tagstring env' bin/parallel echo ::: x y)" = $'env\tx\nenv\ty' ]
  # with -J the config is not read
  echo '--tag' >"$PARALLEL_HOME/prof"
  [ "$(bin/parallel -J prof echo ::: x)" = $'x\tx' ]
  # without $PARALLEL_HOME: ~/.parallel/config
  mkdir -p home/.parallel
  echo '--tagstring home' >home/.parallel/config
  [ "$(PARALLEL_HOME= HOME=$PWD/home bin/parallel echo ::: x)" = $'home\tx' ]
  # under the name concur neither is read
  [ "$(PARALLEL=-v "$CONCUR" echo ::: x)" = x ]
  # a $PARALLEL that is not options and quoted strings is refused, and runs nothing
  PARALLEL="'open" run bin/parallel echo ran ::: x
  [ "$status" -eq 2 ] && [[ $output == *'$PARALLEL: not options and quoted strings'* ]]
  [[ $output != *ran* ]]
  echo '--tag; rm -rf x' >"$PARALLEL_HOME/config"
  run bin/parallel echo ::: x
  [ "$status" -eq 2 ] && [[ $output == *"configuration '$PARALLEL_HOME/config', line 1"* ]]
}

@test "--group-by N: with --pipe, a record is a run of lines with the same column N" {
  printf 'a\t,b\na,,b\nb,,a\nb,a,b\n' >in
  same_as_parallel --stdin in --pipe --group-by 2 --colsep ',' -kN1 wc
  same_as_parallel --stdin in --pipe --group-by 1 --colsep ',' -kN1 'echo B; cat'
  same_as_parallel --stdin in --pipe --group-by 1 --colsep ',' -k 'echo B; cat'
}

@test "--group-by N: a space as --colsep, a TAB without it, -N2" {
  printf 'a\t,b\na,,b\nb,,a\nb,a,b\n' >in
  tr , ' ' <in >in2
  same_as_parallel --stdin in2 --pipe --group-by 2 --colsep ' ' -kN1 wc
  printf 'a\t1\nb\t1\nc\t2\nd\t2\ne\t3' >in3
  same_as_parallel --stdin in3 --pipe --group-by 2 -kN1 'echo B; cat; echo'
  same_as_parallel --stdin in3 --pipe --group-by 2 --colsep '\t' -kN2 'echo B; cat; echo'
  # a group is never cut, however small the block
  seq 100 | awk '{print int($1/10) "\t" $1}' >in4
  "$CONCUR" --pipe --block 20 --group-by 1 -k 'cut -f1 | sort -u' <in4 2>/dev/null >keys
  [ "$(wc -l <keys)" -eq 11 ] && [ -z "$(sort keys | uniq -d)" ]
  run "$CONCUR" --pipe --group-by x cat </dev/null
  [ "$status" -eq 2 ] && [[ $output == *"bad value for --group-by: 'x'"* ]]
}

@test "--pipepart: --pipe's blocks cut out of the -a / :::: file, as GNU parallel cuts them" {
  seq 10 >t10
  same_as_parallel --pipepart -a t10 -k --block 5 'echo foo; cat'
  same_as_parallel --pipepart -a t10 -k --block 2 --regexp --recend '3\n' 'echo foo; cat'
  same_as_parallel -k --pipepart -a t10 --recend '\n' --recstart 6 --block 1 'echo a; cat'
  same_as_parallel -k --block 3G --pipepart -a t10 wc
}

@test "--pipepart --block -N: N blocks a job slot (by default 10)" {
  seq 1000 >t1000
  same_as_parallel -j2 -k --pipepart 'echo {#}; wc -c' :::: t1000
  same_as_parallel -j2 -k --block -1 --pipepart 'echo {#}; wc -c' :::: t1000
  same_as_parallel -j3 -k --block -2 --pipepart 'echo {#}; wc -c' :::: t1000
  same_as_parallel -j2 -k --block -0.01k --pipepart md5sum :::: t1000
}

@test "--pipepart: ::: groups unused, --rrs, the whole file, and what it refuses" {
  seq 10 >t10
  seq 1000 >t1000
  # ::: groups are not used (as GNU parallel)
  same_as_parallel -k --pipepart -a t10 --block 10 'echo a; cat' ::: x
  # --rrs applies (GNU parallel 20221122 ignores it with --pipepart)
  [ "$("$CONCUR" -k --pipepart -a t10 --rrs --block 3 'echo a; cat')" = "$(printf 'a\n12a\n34a\n56a\n78a\n910')" ]
  [ "$("$CONCUR" --pipepart -k -a t1000 --block 1k cat | md5sum)" = "$(md5sum <t1000)" ]
  : >empty
  run "$CONCUR" --pipepart -a empty cat
  [ "$status" -eq 0 ] && [ -z "$output" ]
  run "$CONCUR" --pipepart cat ::: x
  [ "$status" -eq 2 ] && [[ $output == *"--pipepart reads a file"* ]]
  run "$CONCUR" --pipepart -a t10 -N2 cat
  [ "$status" -eq 2 ] && [[ $output == *"-N is not supported"* ]]
  run "$CONCUR" --pipepart -a no-such-file cat
  [ "$status" -ne 0 ] && [[ $output == *"cannot read 'no-such-file'"* ]]
  run "$CONCUR" --pipe --block -1 cat </dev/null
  [ "$status" -eq 2 ] && [[ $output == *"a negative --block needs --pipepart"* ]]
}
