#!/usr/bin/env bats
# Replacement strings and how arguments are placed: {} {.} {/} {//} {/.} {#} {%} {n},
# appending when there is no placeholder, -n, -X. Compared with GNU parallel.

load helpers

PATHS=(/x/y/z.tar.gz rel.c 'a dir/b file.txt' noext ./dot.d/f)

@test "{} is the argument" {
  same_as_parallel -k -j1 printf '%s\\n' '={}=' ::: "${PATHS[@]}"
}

@test "{.} is the argument without its extension" {
  same_as_parallel -k -j1 printf '%s\\n' '={.}=' ::: "${PATHS[@]}"
}

@test "{/} is the basename" {
  same_as_parallel -k -j1 printf '%s\\n' '={/}=' ::: "${PATHS[@]}"
}

@test "{//} is the dirname" {
  same_as_parallel -k -j1 printf '%s\\n' '={//}=' ::: "${PATHS[@]}"
}

@test "{/.} is the basename without its extension" {
  same_as_parallel -k -j1 printf '%s\\n' '={/.}=' ::: "${PATHS[@]}"
}

@test "{#} is the job sequence number" {
  same_as_parallel -k echo '{#}' '{}' ::: a b c d e
}

@test "{%} is the job slot, between 1 and -j" {
  run "$CONCUR" -j2 'sleep 0.2; echo {%}' ::: 1 2 3 4
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$output" | sort -u | paste -sd' ')" = "1 2" ]
}

@test "{%} is 1 for every job with -j1" {
  same_as_parallel -k -j1 echo '{%}' ::: a b c
}

@test "{1} {2} name the arguments of each input group" {
  same_as_parallel -k echo '{2}{1}' '{1}' ::: a b ::: 1 2
}

@test "{2.} and {1/} apply the modifiers to one input group" {
  same_as_parallel -k echo '{2.}' '{1/}' ::: /p/q.r ::: s.t
}

@test "the arguments are appended when the command has no placeholder" {
  same_as_parallel -k echo x ::: a b
}

@test "all groups' arguments are appended when there is no placeholder" {
  same_as_parallel -k echo x ::: a b ::: 1 2
}

@test "a placeholder may appear several times" {
  same_as_parallel -k echo '{}-{}' '{.}' ::: f.c g.h
}

@test "-n 2 passes two arguments per job" {
  same_as_parallel -k -n 2 echo ::: a b c d e
}

@test "-n 2 with {1} {2} names the arguments of one job" {
  same_as_parallel -k -n 2 echo '{2}' '{1}' ::: a b c d
}

@test "-X puts as many arguments as fit in one job, repeating the context" {
  same_as_parallel -k -j1 -X echo 'pre-{}-post' ::: a b c
}

@test "-X without a placeholder appends all arguments" {
  same_as_parallel -k -j1 -X echo ::: a b c
}

# ---------------------------------------------------------------------------
# {= perl expression =}
# ---------------------------------------------------------------------------

@test "{= perl =}: \$_ is the argument and its value afterwards replaces the string, quoted" {
  same_as_parallel -k echo '{= s/a/b/ =}' ::: a ab 'x y' "it's"
  same_as_parallel -k echo 'x{= $_=uc($_) =}y' '{}' ::: a 'b c'
  same_as_parallel -k echo '{==}' ::: a # an empty expression: the argument
  same_as_parallel -k echo '{= $_="a;b" =}' ::: 1 # quoted as one shell word
  # spanning command words and lines
  same_as_parallel -k echo '{= $a=$_;' '$_="<$a>" =}' ::: p q
  same_as_parallel -k echo '{= $a=$_;
    $_="[$a]" =}' ::: p
}

@test "{=N perl =}: the N-th argument; -N from the end; a missing one is empty" {
  same_as_parallel -k echo '{=2 s/p/s/ =}' '{=1 $_.="!" =}' ::: a b ::: pp
  same_as_parallel -k -n3 echo '{=-1 $_=uc =}' ::: a b c d e
  same_as_parallel -k -n2 echo '[{=2 $_="x$_" =}]' ::: a b c
}

@test "{= perl =} with several arguments: once per argument, as {}; -X repeats the word" {
  same_as_parallel -k -n2 echo '{= $_.="!" =}' ::: a b c
  same_as_parallel -k -j1 -X echo 'p{= $_=uc =}' ::: a b c
  same_as_parallel -k -m echo '{= $_=uc =}' ::: a b
}

@test "{= perl =} in the first word is not quoted, as GNU parallel" {
  echo p /bin/ls >in
  same_as_parallel --stdin in l'{= s/p/s/ =}'
}

@test "{= perl =}: state persists from job to job, each job evaluated once" {
  run "$CONCUR" -j1 -k --joblog jl echo '{= $_=++$n =}' ::: a b c
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf '1\n2\n3')" ]
  # the joblog shows the same values (not evaluated a second time)
  [ "$(cut -f9 jl | tail -n +2)" = "$(printf 'echo 1\necho 2\necho 3')" ]
  same_as_parallel -j1 -k echo '{= $h{$_}++; $_=$h{$_} =}' ::: a b a a
}

@test "{= perl =}: GNU parallel's helpers Q pQ uq skip seq slot total_jobs @arg hash, time" {
  same_as_parallel -k echo '{}{=uq()=}' ::: '`echo foo`'
  same_as_parallel -k echo '{= $_=pQ($_) =}' ::: 'a$b"c'
  same_as_parallel -k echo '{= $_=Q($_) =}' ::: "a'b"
  run "$CONCUR" -k echo '{= skip() if /b/ =}' ::: a b c
  [ "$status" -eq 0 ] && [ "$output" = "$(printf 'a\nc')" ]
  same_as_parallel -k -j1 echo '{= $_=seq()."/".total_jobs()." ".slot() =}' ::: a b c
  same_as_parallel -k -j1 echo '{= $_=$job->seq()."-".$job->slot() =}' ::: a b
  same_as_parallel -k echo '{= $_="$arg[2]:$arg[1]" =}' ::: a b ::: c
  run "$CONCUR" echo '{= $_=hash($_) =}' ::: 1
  [[ $output =~ ^0x[0-9a-f]+$ ]] || { echo "$output"; false; }
  run "$CONCUR" echo '{= $_=yyyy_mm_dd_hh_mm_ss() =} {= $_=yyyymmdd() =} {= $_=hhmm() =}' ::: 1
  [[ $output =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\ [0-9]{8}\ [0-9]{4}$ ]] ||
    { echo "$output"; false; }
}

@test "{= perl =}: \$Global::total_completed counts the jobs done, also those --resume skips" {
  run --separate-stderr "$CONCUR" -j1 --joblog jl --halt now,fail=1 \
    echo '{= $_=$Global::total_completed =};exit {}' ::: 0 0 1 0
  [ "$status" -eq 1 ]
  [ "$output" = "$(printf '0\n1\n2')" ]
  run "$CONCUR" -j1 --joblog jl --resume echo '{= $_=$Global::total_completed =}' ::: 0 0 1 0
  [ "$output" = 3 ]
}

@test "{= perl =} in --tagstring, --results and --dry-run" {
  same_as_parallel -k --tagstring '{= $_=uc =}' echo ::: a b
  same_as_parallel -k --dry-run echo '{= s/a/b/ =}' ::: a c
  "$CONCUR" --results 'r/{= $_=uc =}' echo ::: a b
  [ "$(cat r/A r/B)" = "$(printf 'a\nb')" ]
}

@test "a bad perl expression stops concur before any job runs: a message, status 255" {
  run --separate-stderr "$CONCUR" 'touch ran; echo {= s/a/ =}' ::: a
  [ "$status" -eq 255 ]
  [[ $stderr == *"cannot use the perl expression {= s/a/ =}"* ]] || { echo "$stderr"; false; }
  [ ! -e ran ] && [ -z "$output" ]
  run --separate-stderr "$CONCUR" --tagstring '{= ( =}' touch ran ::: a
  [ "$status" -eq 255 ] && [ ! -e ran ]
  # an expression that dies while a job is expanded stops the run the same way
  run --separate-stderr "$CONCUR" -j1 echo '{= die "no $_\n" if /b/ =}' ::: a b c
  [ "$status" -eq 255 ]
  [[ $stderr == *"failed: no b"* ]] || { echo "$stderr"; false; }
  run "$CONCUR" echo '{=x' ::: a # not an expression
  [ "$output" = "{=x a" ]
}

@test "without perl, {= =} is a clear error (status 255); other templates do not need it" {
  mkdir bin && ln -s "$(command -v sh)" bin/sh && ln -s "$(type -P echo)" bin/echo
  run --separate-stderr env PATH="$PWD/bin" SHELL=/bin/sh "$CONCUR" echo '{= s/a/b/ =}' ::: a
  [ "$status" -eq 255 ]
  [[ $stderr == *"cannot run perl"* ]] || { echo "$stderr"; false; }
  run env PATH="$PWD/bin" SHELL=/bin/sh "$CONCUR" echo '{}' ::: a
  [ "$output" = a ]
}

@test "the perl process is reaped at the end, and killed when concur is interrupted" {
  run "$CONCUR" echo '{= $_=$$ =}' ::: a
  [ "$status" -eq 0 ]
  ! kill -0 "$output" 2>/dev/null
  start_bg out err -j1 "echo {= \$_=\$\$ =} >pid; sleep 30.$UNIQ" ::: a
  wait_until 10 test -s pid
  perl_pid=$(cat pid)
  kill -0 "$perl_pid"
  kill -INT "$BG_PID"
  wait "$BG_PID" || true
  ! kill -0 "$perl_pid" 2>/dev/null
  assert_no_process "sleep 30.$UNIQ"
}

# ---------------------------------------------------------------------------
# --plus: {uniq} {choose_k}
# ---------------------------------------------------------------------------

# (GNU parallel also counts the skipped jobs as failed in its exit status, and logs them with
# exit value -2; concur neither runs, counts nor logs them: the outputs are compared.)
same_output() {
  need_parallel
  run "$CONCUR" "$@"
  [ "$status" -eq 0 ]
  [ "$output" = "$(parallel --will-cite "$@")" ] || { echo "concur: $output"; false; }
}

@test "--plus {uniq}: jobs whose arguments are not all different are skipped" {
  same_output -k --plus echo {uniq} ::: A B C ::: A B C ::: A B
  same_output -k --plus echo {1uniq}+{2uniq} ::: A B ::: A B
  same_output -k --plus --dry-run echo {uniq} ::: A B ::: A B
  same_output -k -j1 --plus echo '{uniq}' '{#}' ::: A B ::: A B
}

@test "--plus {choose_k}: jobs whose arguments are not strictly increasing are skipped" {
  same_output -k --plus echo {choose_k} ::: A B C D ::: A B C D ::: A B C D
  same_output -k --plus echo {choose_k} ::: b a ::: a b
  same_as_parallel -k echo {choose_k} ::: A B # plain text without --plus
}

@test "--plus's bash-like forms {:-str} {:n} {:n:m} {/re/str} {//re/str} {/#re/str} {/%re/str}" {
  same_as_parallel -k --plus echo '{:-dflt}' '{:2}' '{:1:3}' ::: abcabc '' AbBc
  same_as_parallel -k --plus echo '{/b/X}' '{//b/X}' '{/#a/X}' '{/%c/X}' ::: abcabc AbBc
  same_as_parallel -k --plus echo '{//[ab]+/<$&>}' '{/b.c/}' ::: abcabc 'x$y' # Perl regexps
  same_as_parallel -k --plus echo '{2/x/Y}' '{1:-none}' ::: '' a ::: xx
  same_as_parallel -k echo '{/b/X}' ::: abc # without --plus: plain text
}

@test "--plus's bash-like case forms {^str} {^^str} {,str} {,,str}" {
  same_as_parallel -k --plus echo '{^a}' '{^^b}' '{,A}' '{,,B}' '{^^[a-z]}' ::: abcabc AbBc
}

@test "a signal stops concur while a slow perl expression runs: perl is killed, status 128+signal" {
  start_bg out err -j1 echo \
    '{= if ($_ eq "b") { open(my $f, ">", "pid.tmp"); print $f $$; close $f; rename "pid.tmp", "pid"; sleep 25 } =}' ::: a b
  wait_until 10 test -s pid
  perl_pid=$(cat pid)
  kill -TERM "$BG_PID"
  status=0
  wait "$BG_PID" || status=$?
  [ "$status" -eq 143 ] || { echo "status $status"; cat err; false; }
  ! kill -0 "$perl_pid" 2>/dev/null
  [ "$(cat out)" = a ]
  [ ! -s err ] || { cat err; false; }
}
