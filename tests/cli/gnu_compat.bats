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

@test "csh-like shells: the lines run with /bin/sh (they are quoted for sh); a missing one is an error" {
  mkdir bin && ln -s /bin/sh bin/tcsh
  run env SHELL="$PWD/bin/tcsh" "$CONCUR" 'echo $0' ::: x
  [ "$output" = "/bin/sh x" ]
  # as GNU parallel (par_testquote): a shell that is not there is an error, csh-like or not
  run --separate-stderr env PARALLEL_SHELL=no-such-csh-$UNIQ "$CONCUR" echo ::: x
  [ "$status" -eq 255 ] && [ -z "$output" ]
  run --separate-stderr env PARALLEL_SHELL=/no/such/tcsh "$CONCUR" echo ::: x
  [ "$status" -eq 255 ] && [ -z "$output" ]
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

# ------------------------------------------------------------------ -d, --colsep, --tagstring

@test "-d splits ::: arguments too, every piece kept, as GNU parallel" {
  run "$CONCUR" -k -d , echo '[{}]' ::: a,b, c
  [ "$output" = "$(printf '[a]\n[b]\n[]\n[c]')" ]
  same_as_parallel -k -d , echo '[{}]' ::: a,b c
  same_as_parallel -k -d , echo ::: a,b ::: 1,2
  same_as_parallel -k -d , --link echo ::: a,b ::: 1,2,3
  same_as_parallel -k -d , echo '[{}]' ::: ,, x ''
  same_as_parallel -k -d ab echo '[{}]' ::: xaby xbay
  same_as_parallel -k -d , -n2 echo '[{}]' ::: a,b,c
}

@test "-d '\\n' splits ::: arguments on newlines; without -d they stay whole (a choice)" {
  run "$CONCUR" -k -d '\n' echo '[{}]' ::: $'a\nb' c
  [ "$output" = "$(printf '[a]\n[b]\n[c]')" ]
  same_as_parallel -k -d '\n' echo '[{}]' ::: $'a\nb' $'c\n' d
  same_as_parallel -k -0 echo '[{}]' ::: $'a\nb' c
  run "$CONCUR" -k echo '[{}]' ::: $'a\nb'
  [ "$output" = "$(printf '[a\nb]')" ]
}

@test "--colsep trims blanks around each column, as GNU parallel" {
  printf ' a , b ,c \n' >in
  run "$CONCUR" --colsep , echo '[{1}][{2}][{3}]' <in
  [ "$output" = "[a][b][c]" ]
  same_as_parallel --stdin in -k --colsep , echo '[{1}][{2}][{3}]'
  same_as_parallel --stdin in -k --colsep , echo '[{}]'
  same_as_parallel --stdin in -k --colsep , --tag echo '{1}'
  printf ' a \t b \tc \n' >tabs
  same_as_parallel --stdin tabs -k --colsep '\t' echo '[{1}][{2}][{3}]'
  same_as_parallel -k --colsep , echo '[{1}][{2}]' ::: ' x , y '
}

@test "--trim n|l|r|lr chooses the trimming, with or without --colsep" {
  printf ' a , b \n' >in
  run "$CONCUR" --colsep , --trim n echo '[{1}]' <in
  [ "$output" = "[ a ]" ]
  same_as_parallel --stdin in --colsep , --trim l echo '[{1}]' '[{2}]'
  same_as_parallel --stdin in --colsep , --trim r echo '[{1}]' '[{2}]'
  same_as_parallel -k --trim lr echo '[{}]' ::: ' a ' $'\tb\t'
  same_as_parallel --trim rl echo '[{}]' ::: ' a '
  run "$CONCUR" --trim x echo ::: a
  [ "$status" -eq 2 ]
  [[ $output == *"bad value for --trim: 'x'"* ]]
}

@test "--tagstring expands \\t \\n \\r and octal escapes, as GNU parallel" {
  run "$CONCUR" --tagstring 'x\ty{}' echo ::: a
  [ "$output" = "$(printf 'x\tya\ta')" ]
  need_parallel
  for t in 'x\ty{}' 'x\ny\\n\q' '\101\0z' '\\t\1' '{}\r'; do
    "$CONCUR" -k --tagstring "$t" echo ::: a b >c_out
    parallel --will-cite -k --tagstring "$t" echo ::: a b >p_out </dev/null
    cmp c_out p_out
  done
}

# ------------------------------------------------------------------ --results -.json, --joblog

@test "--results -.json, -.csv, -.tsv write the results to standard output" {
  run "$CONCUR" -k --results -.json echo ::: a b
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 2 ]
  [[ ${lines[0]} == '{ "Seq": 1, "Host": ":", '*'"Command": "echo a", "V": [ "a" ], "Stdout": "a\u000a", "Stderr": "" }' ]]
  [[ ${lines[1]} == '{ "Seq": 2, '*'"V": [ "b" ]'* ]]
  [ -z "$(ls -A)" ] # no file named -.json
  "$CONCUR" -k --results -.csv echo ::: a 'b c' >out
  [ "$(head -1 out)" = "Seq,Host,Starttime,JobRuntime,Send,Receive,Exitval,Signal,Command,V1,Stdout,Stderr" ]
  [ "$(cut -d, -f9,10 out | sed -n 2p)" = '"echo a",a' ]
  "$CONCUR" --results -.tsv echo ::: a >out
  [ "$(head -1 out | cut -f1,12)" = "$(printf 'Seq\tStderr')" ]
  need_parallel
  parallel --will-cite --results -.tsv echo ::: a >p_out </dev/null
  [ "$(head -1 out)" = "$(head -1 p_out)" ]
}

@test "--joblog - writes the joblog to standard output, each line after its job's output" {
  run "$CONCUR" -k --joblog - echo ::: a b
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 5 ]
  [ "${lines[0]}" = "$(printf 'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand')" ]
  [ "${lines[1]}" = a ]
  [[ ${lines[2]} == $'1\t:\t'*$'\techo a' ]]
  [ "${lines[3]}" = b ]
  [[ ${lines[4]} == $'2\t:\t'*$'\techo b' ]]
  [ -z "$(ls -A)" ] # no file named -
  need_parallel
  parallel --will-cite -k --joblog - echo ::: a b </dev/null | cut -f1,7-9 >p_out
  printf '%s\n' "${lines[@]}" | cut -f1,7-9 >c_out
  cmp c_out p_out
}

@test "--joblog +FILE appends to FILE without a header, as GNU parallel" {
  "$CONCUR" --joblog log echo ::: a >/dev/null
  "$CONCUR" --joblog +log echo ::: b >/dev/null
  "$CONCUR" --joblog +new echo ::: c >/dev/null
  [ "$(cut -f1,9 log)" = "$(printf 'Seq\tCommand\n1\techo a\n1\techo b')" ]
  [ "$(cut -f1,9 new)" = "$(printf '1\techo c')" ]
  # --resume reads FILE back
  run "$CONCUR" -k --joblog +new --resume echo ::: c d
  [ "$output" = d ]
  [ "$(cut -f1,9 new)" = "$(printf '1\techo c\n2\techo d')" ]
  need_parallel
  parallel --will-cite --joblog +p_new echo ::: c >/dev/null </dev/null
  [ "$(cut -f1,9 p_new)" = "$(cut -f1,9 new | head -1)" ]
}

# ------------------------------------------------------------------ -s

@test "-s N: -X / -m command lines shorter than N characters, as GNU parallel" {
  run "$CONCUR" -k -j1 -s 20 -X echo ::: a b c d e f g h i j k l m n o p
  [ "$output" = "$(printf 'a b c d e f g\nh i j k l m n\no p')" ]
  same_as_parallel -k -j1 -s 30 -m echo ::: aa bb cc dd ee ff gg hh ii jj kk ll
  same_as_parallel -k -j1 -s 12 -X echo 'x{}y' ::: a b c d e
  same_as_parallel -k -j1 -s 14 -m echo {} ::: 'a b' c 'd e'
  # the last records are spread over the job slots
  same_as_parallel -k -j2 -s 20 -X echo ::: a b c d e f g h i j k l m n o p
  same_as_parallel -k -j3 -s 20 -X echo ::: a b c d e f g h i j k l m n o p q r s t u v w x y z
  same_as_parallel -k -j4 -s 25 -m echo ::: a b c d e ::: 1 2
}

@test "-s N with -n: both limits apply" {
  run "$CONCUR" -k -n 3 -s 10 echo ::: a b c d
  [ "$output" = "$(printf 'a b\nc d')" ]
  same_as_parallel -k -n 3 -s 10 echo ::: a b c d
  same_as_parallel -k --max-chars=12 echo {} ::: a b
}

@test "-s N: an argument too long for the limit stops concur (exit 255), as GNU parallel" {
  run "$CONCUR" -s 10 echo ::: aaaaaaaaaaaaaaaaaaaaaa
  [ "$status" -eq 255 ]
  [[ $output == *"command line too long (27 >= 10): echo aaaaaaaaaaaaaaaaaaaaaa"* ]]
  same_as_parallel -k -j1 -s 10 -X echo ::: a aaaaaaaaaaaaaaaaaaaaaa
  run "$CONCUR" -s 0 echo ::: a
  [ "$status" -eq 2 ]
}

# ------------------------------------------------------------------ --nice, --env, --compress

@test "--nice N runs the jobs at niceness N (absolute, as GNU parallel)" {
  run "$CONCUR" -k --nice 7 'echo {} $(ps -o ni= -p $$)' ::: a b
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'a 7\nb 7')" ]
  run nice -n 3 "$CONCUR" --nice 5 'echo $(ps -o ni= -p $$) {}' ::: a
  [ "$output" = "5 a" ]
  need_parallel
  nice -n 3 parallel --will-cite --nice 5 'echo $(ps -o ni= -p $$) {}' ::: a >p_out </dev/null
  [ "$(cat p_out)" = "5 a" ]
  run "$CONCUR" --nice 20 echo ::: a
  [ "$status" -eq 2 ]
}

@test "--env NAME is accepted; exported variables reach the jobs" {
  export CONCUR_T_VAR="x y"
  run "$CONCUR" --env CONCUR_T_VAR 'echo "[$CONCUR_T_VAR]" {}' ::: a
  [ "$status" -eq 0 ]
  [ "$output" = "[x y] a" ]
  same_as_parallel --env CONCUR_T_VAR 'echo "[$CONCUR_T_VAR]" {}' ::: a
  run "$CONCUR" --env _ --env 'CONCUR_T*' 'echo "[$CONCUR_T_VAR]" {}' ::: a
  [ "$output" = "[x y] a" ]
  run "$CONCUR" --env '' echo ::: a
  [ "$status" -eq 2 ]
}

@test "--compress compresses the files of a --results directory, as GNU parallel (par_results_compress)" {
  command -v pzstd >/dev/null || skip "pzstd is not installed"
  "$CONCUR" --results r --compress 'echo {}; echo e{} >&2' ::: 1 '  ' /
  [ "$(cat r/1/1/stdout | pzstd -qdc)" = 1 ]
  [ "$(pzstd -qdc <r/1/1/stderr)" = e1 ]
  [ "$(cat r/1/1/seq)" = 1 ] # not compressed
  [ "$(cat r/1/*/stdout | pzstd -qdc | LC_ALL=C sort)" = "$(printf '  \n/\n1')" ]
  "$CONCUR" --results 't/{}' --compress echo ::: a
  [ "$(pzstd -qdc <t/a)" = a ]
  need_parallel
  parallel --will-cite --results g --compress echo ::: 1
  [ "$(pzstd -qdc <g/1/1/stdout)" = "$(pzstd -qdc <r/1/1/stdout)" ]
  # without a compressor in $PATH, the files are written as they are (GNU parallel's cat)
  mkdir bin && ln -s "$(type -P echo)" bin/echo
  PATH=$PWD/bin "$CONCUR" --results p --compress echo ::: b
  [ "$(cat p/1/b/stdout)" = b ]
}

@test "--compress is accepted and changes nothing in the output" {
  same_as_parallel -k --compress 'seq {}' ::: 3 2
  # past the 1 MiB kept in memory, output spills to a file: still whole
  "$CONCUR" --compress 'seq 300000; : {}' ::: a >out
  [ "$(wc -l <out)" -eq 300000 ]
  [ "$(tail -1 out)" = 300000 ]
}

# ------------------------------------------------------------------ --plus

@test "--plus: {+/} {+.} {+..} {+...} {..} {...} {/..} {/...} as GNU parallel" {
  run "$CONCUR" --plus echo '{..}:{+..}:{+/}:{/..}:{+.}:{...}:{+...}' ::: dir/a.tar.gz
  [ "$output" = "dir/a:tar.gz:dir:a:gz:dir/a.tar.gz:" ]
  t='{}:{+/}:{+.}:{+..}:{+...}:{..}:{...}:{/..}:{/...}:{.}:{/.}:{1..}:{1+/}:{1+..}'
  for a in a.b.c.d dir/a.b.c /x.y/file d.e/f.g.h/a.b a..b . '' a/ /a .a.b; do
    same_as_parallel --plus echo "$t" ::: "$a"
  done
  same_as_parallel -k --plus echo {2...} {1/..} ::: a.b.c.d ::: x/y.z.w.q
}

@test "--plus: {##} is the number of jobs, {0#} and {0%} are zero-padded" {
  run "$CONCUR" -k --plus echo '{##}' '{0#}' ::: $(seq 10)
  [ "${lines[0]}" = "10 01" ]
  [ "${lines[9]}" = "10 10" ]
  same_as_parallel -k --plus echo {##} {#} {0#} ::: a b c d e f g h i j k
  same_as_parallel -k -j 12 --plus echo {0%} ::: a
  same_as_parallel -k --plus --tagstring '{##}-{0#}' echo ::: a b
  printf 'a\nb\nc\n' >in
  same_as_parallel --stdin in -k --plus echo {##}
}

@test "--plus: {#re} {##re} {%re} {%%re} trim the shortest / longest matching prefix or suffix" {
  run "$CONCUR" -k --plus echo '{#z.*z.}' '{##z.*z.}' ::: z.z.z.foo
  [ "$output" = "z.foo foo" ]
  run "$CONCUR" -k --plus echo '{%.z.z}' '{%%.z.*z}' ::: foo.z.z.z
  [ "$output" = "foo.z foo" ]
  # nothing matches: the value as it is; the slot, sequence and totals stay what they were
  run "$CONCUR" -k --plus echo '{%x}' '{#x}' '{%}' '{#}' '{##}' ::: abc
  [ "$output" = "abc abc 1 1 1" ]
  # quoted as any value; applied to each argument of {}
  run "$CONCUR" -k --plus echo '{%.gz}' ::: "a b.gz" c.tar.gz
  [ "$output" = "$(printf 'a b\nc.tar')" ]
  same_as_parallel -k --plus echo '{#z.*z.}' '{##z.*z.}' ::: z.z.z.foo
  same_as_parallel -k --plus echo '{%.z.z}' '{%%.z.*z}' ::: foo.z.z.z
  same_as_parallel -k --plus echo '{%.gz}' '{#a}' ::: a.gz b.gz.gz ab
}

@test "without --plus its replacement strings are plain text" {
  run "$CONCUR" echo '{..}' '{+/}' '{##}' '{%.c}' ::: a.b.c
  [ "$output" = "{..} {+/} {##} {%.c} a.b.c" ]
  same_as_parallel -k echo '{..}' '{+/}' '{##}' ::: a.b.c
}

# ------------------------------------------------------------------ --header

@test "--header : with ::: groups: {name} is the column the first argument names" {
  run "$CONCUR" -k --header : echo {a} {b} ::: a 1 2 ::: b x y
  [ "$output" = "$(printf '1 x\n1 y\n2 x\n2 y')" ]
  same_as_parallel -k --header : echo {a}-{b} ::: a 1 2 :::+ b x y
  same_as_parallel -k --header : echo ::: a 1 2
  same_as_parallel -k --header 1 echo {a} ::: a 1
  same_as_parallel -k --header : --link echo {x} {a} ::: x 1 2 3 ::: a p q
}

@test "--header : with :::: files and standard input, with modifiers" {
  printf 'f\na.b\ndir/c.d\n' >fl
  run "$CONCUR" -k --header : echo '{f.}' '{f/}' :::: fl
  [ "$output" = "$(printf 'a a.b\ndir/c c.d')" ]
  same_as_parallel -k --header : echo '{f.}' '{f/}' '{f//}' {1} :::: fl ::: g h i
  same_as_parallel --stdin fl -k --header : echo '{f/.}'
  # the header is not a job: {##} and --bar count the others
  same_as_parallel -k --header : --plus echo '{f}' '{##}' :::: fl
  same_as_parallel --stdin fl -k --header : --plus echo '{f}' '{##}'
}

@test "--header : with --colsep names each column" {
  printf 'n,v\n1,2\n3,4\n' >csv
  run "$CONCUR" -k --header : --colsep , echo '{v}-{n}' :::: csv
  [ "$output" = "$(printf '2-1\n4-3')" ]
  same_as_parallel -k --header : --colsep , echo '{v}-{n}-{1}' :::: csv
  same_as_parallel --stdin csv -k --header : --colsep , --tag echo '{n}'
  printf 'n\tv\n1\t2\n' >tsv
  same_as_parallel --stdin tsv -k --header : --colsep '\t' echo '{n}{v}'
}

@test "--header : names the levels of a --results directory" {
  "$CONCUR" --header : --results r echo {a} ::: a 1 2 >/dev/null
  [ "$(cat r/a/1/stdout)" = 1 ]
  [ "$(cat r/a/2/stdout)" = 2 ]
  run "$CONCUR" --pipe --header 0 cat </dev/null
  [ "$status" -eq 2 ]
}

@test "--header : the levels of a --results directory are in the order of the names, as GNU parallel" {
  need_parallel
  for p in "$CONCUR" "parallel --will-cite"; do
    d=$([[ $p == "$CONCUR" ]] && echo c || echo g)
    # shellcheck disable=SC2086
    $p --results $d --header : -k echo ::: foo bar ::: A B >/dev/null
    # shellcheck disable=SC2086
    $p --results $d-n --header : -k -n2 echo ::: 2 x y ::: 10 u >/dev/null
    # shellcheck disable=SC2086
    $p --results $d-p -k echo ::: a ::: b >/dev/null # no --header: in the order given
  done
  [ -e c/A/B/foo/bar/stdout ]
  [ "$(cd g && find . | sort)" = "$(cd c && find . | sort)" ]
  [ "$(cd g-n && find . | sort)" = "$(cd c-n && find . | sort)" ]
  [ "$(cd g-p && find . | sort)" = "$(cd c-p && find . | sort)" ]
}

@test "--header : {=name perl =} is {=N perl =} for the column called name (par_header_parens)" {
  same_as_parallel -k --header : echo '{=v2=}{=v1 $_=Q($_)=}' ::: v1 K ::: v2 O
  same_as_parallel -k --header : echo '{2}{=1 $_=uc=}' ::: v2 k ::: v1 o
}

@test "--pipe --header: the header goes in front of every block, as GNU parallel (par_header)" {
  (echo h1; echo h2; echo 1a; echo 1b; echo 2a; echo 2b; echo 3a) >in
  run "$CONCUR" -j1 --pipe -N2 -k --header '.*\n.*\n' 'echo Start; cat; echo Stop' <in
  [ "$output" = "$(printf 'Start\nh1\nh2\n1a\n1b\nStop\nStart\nh1\nh2\n2a\n2b\nStop\nStart\nh1\nh2\n3a\nStop')" ]
  same_as_parallel --stdin in -j1 --pipe -N2 -k --header : 'echo Start; cat; echo Stop'
  same_as_parallel --stdin in -j1 --pipe -N2 -k --header 2 'echo Start; cat; echo Stop'
  # the first block is read after the header, as GNU parallel reads it
  same_as_parallel --stdin in -j1 --pipe -k --block 10 --header : 'echo Start; cat; echo Stop'
  (echo h1; echo h2; perl -e '$a="x"x110;for(1..22){print $_,$a,"\n"}') >big
  same_as_parallel --stdin big -j1 --pipe -k --block 1k --header '.*\n.*\n' 'echo Start; cat; echo Stop'
  run "$CONCUR" --pipe --header '(' cat <in
  [ "$status" -ne 0 ]
}

# ------------------------------------------------------------------ --retries

@test "--retries with replacement strings: expanded for each job (GNU's par_retries_replacement_string)" {
  run "$CONCUR" --retries {//} 'echo {/} >>tries; exit {/}' ::: 1/11 2/22 3/33
  [ "$status" -eq 3 ]
  [ "$(sort tries)" = "$(printf '11\n22\n22\n33\n33\n33')" ]
  if command -v parallel >/dev/null; then
    parallel --will-cite --retries {//} 'echo {/} >>gnu; exit {/}' ::: 1/11 2/22 3/33 || true
    [ "$(sort tries)" = "$(sort gnu)" ]
  fi
  # a value that is not a number: that job is not retried, and concur says why
  run "$CONCUR" --retries {} 'echo {} >>once; exit 1' ::: a
  [ "$status" -eq 1 ]
  [ "$(cat once)" = a ]
  [[ "$output" == *"--retries {}: 'a' is not a number of tries"* ]]
}

@test "--retries 0: as GNU parallel, a failing job runs again until it succeeds" {
  run "$CONCUR" --retries 0 'n=$(cat n 2>/dev/null || echo 0); echo $((n + 1)) >n; [ $n -ge 4 ] && echo {}' ::: ok
  [ "$status" -eq 0 ]
  [ "$output" = ok ]
  [ "$(cat n)" = 5 ]
  run "$CONCUR" --retries x true ::: a
  [ "$status" -eq 2 ]
}

# ------------------------------------------------------------------ -X / -m line length

@test "-X / -m without -s fill command lines to GNU parallel's length (63664 with 4 kB pages)" {
  [ "$(getconf PAGESIZE)" = 4096 ] || skip "the limit depends on the page size"
  seq 1 30000 >in
  run bash -c '"$CONCUR" -X -k -j2 echo <in | awk "{print NF, length(\$0)}"'
  [ "$output" = "$(printf '12460 63653\n10609 63653\n3466 20795\n3465 20789')" ]
  same_as_parallel --stdin in -k -j2 -X echo
  same_as_parallel --stdin in -k -j3 -m echo 'a{}b'
  seq 1 12000 | sed 's/$/ x/' >spaced # quoted arguments count with their quotes
  same_as_parallel -k -j2 -X echo :::: spaced
}

@test "-s above GNU parallel's limit: a warning, and the limit stays GNU's" {
  [ "$(getconf PAGESIZE)" = 4096 ] || skip "the limit depends on the page size"
  seq 1 30000 >in
  "$CONCUR" -s 100000 -X -k -j2 echo <in >out 2>err
  [ "$(cat err)" = "concur: warning: value for option -s should be < 63664" ]
  [ "$(awk 'NR == 1 {print length($0)}' out)" = 63653 ]
  same_as_parallel --stdin in -s 100000 -k -j2 -X echo
}

# ------------------------------------------------------------------ --halt's messages

# stderr_as_parallel ARGS...: concur's and GNU parallel's stdout and stderr, merged in the
# order they were written (-j1: one job at a time), are the same but for the program name.
stderr_as_parallel() {
  need_parallel
  local c p
  c=$("$CONCUR" "$@" 2>&1; echo "exit $?")
  p=$(parallel --will-cite "$@" 2>&1; echo "exit $?")
  [ "${c//concur:/parallel:}" = "$p" ] || { printf 'concur:\n%s\nparallel:\n%s\n' "$c" "$p"; false; }
}

@test "--halt notes the job in GNU parallel's words, after its output" {
  run "$CONCUR" -j1 --halt now,fail=1 'echo {}; exit {}' ::: 0 1 2
  [ "$status" -eq 1 ]
  [ "$output" = "$(printf '0\n1\nconcur: This job failed:\necho 1; exit 1')" ]
  stderr_as_parallel -j1 --halt soon,fail=1 'echo {}; exit {}' ::: 0 1 2 3
  stderr_as_parallel -j1 --halt now,success=1 'echo {}; exit {}' ::: 1 0 2
  stderr_as_parallel -j1 --halt soon,done=1 'echo {}; exit {}' ::: 0 1
  stderr_as_parallel -j1 --halt soon,fail=50% 'echo {}; exit {}' ::: 0 1 2 3
}

@test "--halt soon: 'Starting no more jobs', and later failures noted too, as GNU parallel" {
  # job 1 fails once job 2 runs; job 2 fails once the note about job 1 is out
  local job='if [ {} = 1 ]; then until [ -e ERR.2 ]; do sleep 0.01; done; exit 1; fi
touch ERR.2; until grep -q Starting ERR; do sleep 0.01; done; exit {}'
  local rc=0
  "$CONCUR" -j2 --halt soon,fail=1 "${job//ERR/err}" ::: 1 2 2>err || rc=$?
  [ "$rc" -eq 1 ]
  local cmd1="${job//ERR/err}" cmd2="${job//ERR/err}"
  cmd1=${cmd1//\{\}/1} cmd2=${cmd2//\{\}/2}
  [ "$(cat err)" = "$(printf 'concur: This job failed:\n%s\nconcur: Starting no more jobs. Waiting for 1 jobs to finish.\nconcur: This job failed:\n%s' "$cmd1" "$cmd2")" ]
  if command -v parallel >/dev/null; then
    parallel --will-cite -j2 --halt soon,fail=1 "${job//ERR/gnu}" ::: 1 2 2>gnu || true
    diff <(sed 's/^concur:/parallel:/; s/\berr\b/gnu/g' err) gnu
  fi
}

# ------------------------------------------------------------------ CR-NL input

@test "input lines ending in CR-NL: GNU parallel's warning, once; the CR stays in the argument" {
  printf 'a\r\nb\r\nc\r\nd\r\n' >dos
  "$CONCUR" -k echo :::: dos >out 2>err
  [ "$(cat err)" = 'concur: warning: The first three values end in CR-NL. Consider using -d "\r\n"' ]
  [ "$(cat out)" = "$(printf 'a\r\nb\r\nc\r\nd\r')" ]
  same_as_parallel --stdin dos -k echo
  if command -v parallel >/dev/null; then
    parallel --will-cite -k echo :::: dos 2>gnu >/dev/null
    [ "$(sed 's/^concur: warning:/parallel: Warning:/' err)" = "$(cat gnu)" ]
  fi
  # from standard input too; not when one of the first three ends in a plain newline
  "$CONCUR" -k echo <dos 2>err >/dev/null
  [ -s err ]
  printf 'a\r\nb\nc\r\nd\r\n' | "$CONCUR" -k echo 2>err >/dev/null
  [ ! -s err ]
  # nor with -d (the delimiter was chosen) or fewer than three values
  "$CONCUR" -d '\n' echo :::: dos 2>err >/dev/null
  [ ! -s err ]
  printf 'a\r\nb\r\n' | "$CONCUR" echo 2>err >/dev/null
  [ ! -s err ]
  run "$CONCUR" -k -d '\r\n' echo :::: dos
  [ "$output" = "$(printf 'a\nb\nc\nd')" ]
}

# ------------------------------------------------------------------ --line-buffer

@test "--line-buffer: a command that cannot run says so, as without --line-buffer" {
  local rc=0
  "$CONCUR" nonexistent_cmd_$UNIQ ::: 1 2>grouped || rc=$?
  [ "$rc" -eq 1 ]
  grep -q "nonexistent_cmd_$UNIQ" grouped
  rc=0
  "$CONCUR" --line-buffer nonexistent_cmd_$UNIQ ::: 1 2>lb || rc=$?
  [ "$rc" -eq 1 ]
  cmp grouped lb
  "$CONCUR" --line-buffer --tag nonexistent_cmd_$UNIQ ::: 1 2>lbtag || true
  [ "$(cat lbtag)" = "1	$(cat grouped)" ]
  if command -v parallel >/dev/null; then # GNU parallel's shell says it in both modes
    rc=0
    parallel --will-cite --line-buffer nonexistent_cmd_$UNIQ ::: 1 2>gnu || rc=$?
    [ "$rc" -eq 1 ]
    grep -q "nonexistent_cmd_$UNIQ" gnu
  fi
}

# ------------------------------------------------------------------ split replacement strings

@test "a replacement string split by white space or a newline, as GNU parallel reads it" {
  local nl=$'\n'
  # after the number of a positional one, white space (newlines too) is allowed
  run "$CONCUR" -k echo "{1${nl}.}" "{2 }" ::: a.x/b.c ::: d
  [ "$output" = "a.x/b d" ]
  same_as_parallel -k echo "{1${nl}.}" "{2 }" "{1	}" "{1${nl}${nl}}" "{1  //}" ::: a.x/b.c ::: d
  same_as_parallel -k -X echo "x{1${nl}}y" ::: a b ::: c
  # anywhere else it is plain text, which the shell then reads
  same_as_parallel -k echo "{ 1}" "{. }" "{1/ }" "{1 1}" ::: a.x/b.c ::: d
  same_as_parallel -k echo "{${nl}}" ::: a
  same_as_parallel -k echo "'{'${nl}'}'" ::: a
  same_as_parallel -k echo "{}${nl}echo {}" ::: a
  # nor across two command words: the arguments are appended
  run "$CONCUR" -k echo '{1' '}' ::: a ::: b
  [ "$output" = "{1 } a b" ]
  same_as_parallel -k echo '{1' '}' ::: a ::: b
  # -I: a replacement string with a newline in it
  same_as_parallel -k -I "X${nl}Y" echo "aX${nl}Yb" ::: a
  same_as_parallel -k --tagstring "{${nl}}" echo ::: a
}

# ------------------------------------------------------------------ --eta

@test "--eta writes GNU parallel's header and status lines on stderr" {
  "$CONCUR" -j2 --eta echo ::: 1 2 3 >out 2>err
  [ "$(sort out)" = "$(printf '1\n2\n3')" ]
  local ncpu
  ncpu=$(nproc)
  [ "$(sed -n 2,5p err)" = "$(printf 'Computers / CPU cores / Max jobs to run\n1:local / %s / 2\n\nComputer:jobs running/jobs completed/%%of started jobs/Average seconds to complete' "$ncpu")" ]
  # then "\r" and a status, each time; the last one says that all are done, then a newline
  local last
  last=$(tail -n 1 err | tr '\r' '\n' | tail -n 1)
  [[ "$last" =~ ^ETA:\ [0-9]+s\ Left:\ 0\ AVG:\ [0-9]+\.[0-9]{2}s\ \ local:0/3/100%/[0-9]+\.[0-9]s\ $ ]]
  [ "$(tail -c 1 err | od -An -c | tr -d ' ')" = '\n' ]
  if command -v parallel >/dev/null; then # the same lines (GNU's order varies with timing)
    parallel --will-cite -j2 --eta echo ::: 1 2 3 2>gnu >/dev/null
    grep -qxF "1:local / $ncpu / 2" gnu
    [[ "$(tail -n 1 gnu | tr '\r' '\n' | tail -n 1)" =~ ^ETA:\ [0-9]+s\ Left:\ 0\ AVG:\ [0-9]+\.[0-9]{2}s\ \ local:0/3/100%/[0-9]+\.[0-9]s\ $ ]]
  fi
}

# ------------------------------------------------------------------ more --header forms

@test "--header REGEXP (any value but 0): the first line, as GNU parallel without --pipe" {
  printf 'n\tv\n1\t2\n3\t4\n' >tsv
  run "$CONCUR" -k --header '.*\n.*\n' echo '{v}' :::: tsv
  [ "$output" = "$(printf '2\n4')" ]
  same_as_parallel -k --header 2 echo '{n}' :::: tsv
  same_as_parallel -k --header x echo '{n}' :::: tsv
  same_as_parallel -k --header x echo ::: a b
}

@test "--header without --colsep splits TAB-separated lines, untrimmed; a CR-NL header is read" {
  printf 'n\tv\n1\t2\n 3 \t4\n' >tsv
  run "$CONCUR" -k --header : echo '[{n}]' '{v}' :::: tsv
  [ "$output" = "$(printf '[1] 2\n[ 3 ] 4')" ]
  same_as_parallel -k --header : echo '[{n}]' '{v}' '{}' :::: tsv
  same_as_parallel --stdin tsv -k --header : --tag echo '{v}'
  printf 'h\r\nv\r\n' >dos
  same_as_parallel --stdin dos -k --header : echo '[{h}]'
}

@test "--header 0: the files' names name their columns, as GNU parallel" {
  printf 'n\tv\n1\t2\n' >t1
  printf 'x\ny\n' >f2
  run "$CONCUR" -k --header 0 echo '{f2}' :::: f2
  [ "$output" = "$(printf 'x\ny')" ]
  same_as_parallel -k --header 0 echo '{t1}' '{f2}' :::: t1 f2
  same_as_parallel -k --header 0 echo '{f2}' ::: q :::: f2
}

# ------------------------------------------------------------------ a closed stdout

@test "a reader that goes away (| head) stops concur without a message, as GNU parallel" {
  run bash -c '"$CONCUR" --lb seq ::: 1000000 | head -2'
  [ "$output" = "$(printf '1\n2')" ]
  run bash -c '"$CONCUR" -k seq ::: 1000000 1000000 | head -1; echo "exit ${PIPESTATUS[0]}"'
  [ "$output" = "$(printf '1\nexit 255')" ]
  # other write errors are still reported: a full disk on stdout
  if [ -w /dev/full ]; then
    run bash -c '"$CONCUR" echo ::: a >/dev/full'
    [ "$status" -eq 255 ]
    [[ "$output" == *"cannot write to standard output"*"No space left on device"* ]]
  fi
}

# ------------------------------------------------------------------ {-n}

@test "{-n} is the n-th argument from the last, as GNU parallel (par_negative_replacement)" {
  run "$CONCUR" -X -j1 -N 6 echo {-1}orrec{1} ::: t B X D E c
  [ "$output" = correct ]
  run "$CONCUR" --colsep ' ' echo '{2} + {4} = {2} + {-1}=' '$(( {2} + {-1} ))' ::: "1 2 3 4"
  [ "$output" = "2 + 4 = 2 + 4= 6" ]
  run "$CONCUR" -k --colsep , echo '{-1.}' '{-2/}' ::: a,b/c.d,e.f x,y
  [ "$output" = "$(printf 'e c.d\ny x')" ]
  same_as_parallel -k -N3 echo {-1}-{-3} ::: a b c d e f
  same_as_parallel -k --colsep ' ' echo '{-3}orrect' ::: "1 c 3 4"
}

@test "--tagstring with -X repeats the word of {} for each argument, as GNU parallel (par_tagstring)" {
  run "$CONCUR" -j1 -X -v --tagstring a{}b echo ::: 3 4
  [ "$output" = "$(printf 'a3b a4b\techo 3 4\na3b a4b\t3 4')" ]
  same_as_parallel -j1 -k -X --tagstring 'x {} y{.}z' echo ::: 3 4.x
  same_as_parallel -j1 -k -m --tagstring 'a{}b' echo ::: 3 4.x
}

@test "--results X.json writes control characters as \\u00XX, newlines too, as GNU parallel (par_json)" {
  run "$CONCUR" --results -.json printf '%s' ::: "$(printf 't\tn\nx\001"\\')"
  [ "$status" -eq 0 ]
  [[ "$output" == *'"Stdout": "t\u0009n\u000ax\u0001\"\\", "Stderr": ""'* ]]
  if command -v parallel >/dev/null; then
    printf 'a\tb\n' >in
    "$CONCUR" -k --results -.json cat ::: in | perl -pe 's/\d+\.\d+/0/g' >c
    parallel --will-cite -k --results -.json cat ::: in | perl -pe 's/\d+\.\d+/0/g' >p
    diff p c
  fi
}

# ------------------------------------------------------------------ the first word

@test "a placeholder in the line's first word is not quoted, as GNU parallel (par_replacement_string_as_part_of_command)" {
  run bash -c 'echo "ls /bin/ls" | "$CONCUR" {}'
  [ "$output" = /bin/ls ]
  run bash -c 'echo "s /bin/ls" | "$CONCUR" l{}'
  [ "$output" = /bin/ls ]
  run "$CONCUR" -k {} ::: 'echo a; echo b' 'printf %s\\n c'
  [ "$output" = "$(printf 'a\nb\nc')" ]
  # elsewhere the values stay quoted
  run "$CONCUR" --dry-run 'echo {}; {}' ::: 'echo x'
  [ "$output" = "echo 'echo x'; 'echo x'" ]
  for cmd in '{} x' 'x{} y' '{.} y' 'echo {}; {}' '{1} y' ' {}' '{}|cat' "{} 'z'"; do
    same_as_parallel --dry-run "$cmd" ::: 'a b.c'
  done
}

@test "--results PATH with replacement strings: each job's files at its expanded PATH, as GNU parallel (par_result_replace)" {
  run "$CONCUR" -k --results r_{}_x 'echo {}; echo e{} >&2' ::: foo 'a b'
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  [ "$(cat r_foo_x)" = foo ] && [ "$(cat r_foo_x.err)" = efoo ] && [ "$(cat r_foo_x.seq)" = 1 ]
  [ "$(cat 'r_a b_x')" = "a b" ] && [ "$(cat 'r_a b_x.seq')" = 2 ]
  "$CONCUR" --results d_{}/ 'echo {}; echo e{} >&2' ::: foo
  [ "$(cat d_foo/stdout)" = foo ] && [ "$(cat d_foo/stderr)" = efoo ] && [ "$(cat d_foo/seq)" = 1 ]
  "$CONCUR" --results n_{1}/x{2}.{#} echo ::: foo ::: bar
  [ "$(cat n_foo/xbar.1)" = "foo bar" ]
  if command -v parallel >/dev/null; then
    mkdir g c
    for d in g c; do
      if [ $d = g ]; then p=(parallel --will-cite); else p=("$CONCUR"); fi
      (cd $d && "${p[@]}" -k --results r_{}_x 'echo {}; echo e{} >&2' ::: foo 'a b' &&
        "${p[@]}" --results d_{}/ 'echo {}; echo e{} >&2' ::: foo &&
        "${p[@]}" --results n_{1}/x{2}.{#} echo ::: foo ::: bar)
    done
    [ "$(cd g && find . | sort)" = "$(cd c && find . | sort)" ]
  fi
}

# ------------------------------------------------------------------ run as parallel

@test "run under the name parallel (a drop-in link), concur names itself parallel in its messages" {
  ln -s "$CONCUR" parallel
  run ./parallel -j1 --halt now,fail=1 'echo {#}; exit {}' ::: 0 1 0
  [ "$output" = "$(printf '1\n2\nparallel: This job failed:\necho 2; exit 1')" ]
  run bash -c 'printf "b\r\nc\r\nd\r\n" | ./parallel -k echo {}a'
  [[ "$output" == *'parallel: Warning: The first three values end in CR-NL.'* ]]
  # under its own name, its own
  run bash -c 'printf "b\r\nc\r\nd\r\n" | "$CONCUR" -k echo {}a'
  [[ "$output" == *'concur: warning: The first three values end in CR-NL.'* ]]
}

# ------------------------------------------------------------------ PARALLEL_ENV

@test "PARALLEL_ENV: shell code run before every command, or the file (a fifo too) holding it" {
  need_parallel
  for p in "$CONCUR" "parallel --will-cite"; do
    out=$([[ $p == "$CONCUR" ]] && echo out.c || echo out.g)
    # shellcheck disable=SC2086
    PARALLEL_ENV="v='OK as variable'" $p -k {} '$v' ::: echo echo >>"$out"
    echo "v='OK as file'" >penv
    # shellcheck disable=SC2086
    PARALLEL_ENV=$PWD/penv $p echo '$v' {} ::: x >>"$out"
    # shellcheck disable=SC2086
    PARALLEL_ENV=$'w=1\001v=2' $p echo '$w$v' ::: y >>"$out"
    # shellcheck disable=SC2086
    PARALLEL_ENV=v=3 $p -k ::: 'echo $v' 'env | grep -c PARALLEL_ENV= || :' >>"$out"
    mkfifo fifo
    (echo "v='OK as fifo'" >fifo &)
    # shellcheck disable=SC2086
    PARALLEL_ENV=$PWD/fifo $p echo '$v' ::: z >>"$out"
    rm fifo
  done
  [ "$(cat out.c)" = "$(cat out.g)" ]
  # the command line shown (here by --dry-run) is the command's own
  [ "$(PARALLEL_ENV=v=1 "$CONCUR" --dry-run echo ::: a)" = "echo a" ]
}

@test "PARALLEL_HOME is made when it is missing, as GNU parallel does; a warning when it cannot be" {
  PARALLEL_HOME=$PWD/home/sub "$CONCUR" echo ::: OK >out
  [ -d home/sub ] && [ "$(cat out)" = OK ]
  touch file
  run --separate-stderr env PARALLEL_HOME="$PWD/file/sub" "$CONCUR" echo ::: OK
  [ "$status" -eq 0 ] && [ "$output" = OK ]
  [[ $stderr == *'$PARALLEL_HOME'*"file/sub"* ]] || { echo "$stderr"; false; }
}

# ------------------------------------------------------------------ the "parallel" persona

# as_parallel ARGS...: concur run under the name parallel (a symbolic link, as a drop-in
# install has it), stderr merged into stdout.
as_parallel() {
  [[ -e bin/parallel ]] || { mkdir -p bin && ln -s "$CONCUR" bin/parallel; }
  bin/parallel "$@" 2>&1
}

@test "as parallel: errors in GNU parallel's words, without a 'Try' line" {
  run as_parallel --trim fj ::: echo
  [ "$status" -eq 2 ] && [ "$output" = "parallel: Error: --trim must be one of: r l rl lr." ]
  run as_parallel --pipe </dev/null
  [ "$output" = "parallel: Error: --pipe/--pipepart must have a command to pipe into (e.g. 'cat')." ]
  run env PARALLEL_SHELL=no-such-sh-$UNIQ bin/parallel echo ::: x
  [ "$status" -eq 255 ] && [ "$output" = "parallel: Error: Shell 'no-such-sh-$UNIQ' not found." ]
  run as_parallel --halt error echo ::: x
  [ "$output" = "parallel: Error: --halt must have 'never', 'soon', or 'now'." ]
  run as_parallel --halt soon echo ::: x
  [ "$output" = "parallel: Error: --halt soon must be followed by ,success or ,fail." ]
  # under its own name concur keeps its own words
  run "$CONCUR" --trim fj echo ::: x
  [ "$status" -eq 2 ] && [[ $output == *"bad value for --trim: 'fj'"* && $output == *"Try 'concur --help'"* ]]
}

@test "as parallel: a NUL in the input gives GNU parallel's three warning lines" {
  printf 'foo\0bar' >in
  run as_parallel echo <in
  [ "${lines[0]}" = 'parallel: Warning: A NUL character in the input was replaced with \0.' ]
  [ "${lines[1]}" = 'parallel: Warning: NUL cannot be passed through in the argument list.' ]
  [ "${lines[2]}" = 'parallel: Warning: Did you mean to use the --null option?' ]
  [ "${lines[3]}" = 'foo\0bar' ]
}

@test "as parallel: an argument too long for -s is cut at 50 characters in the error" {
  long=$(printf 'z%.0s' {1..100})
  run as_parallel -j1 -m -s 10 echo ::: "$long"
  [ "$status" -eq 255 ]
  [ "$output" = "parallel: Error: Command line too long (105 >= 10) at input 0: $(printf 'z%.0s' {1..50})..." ]
}

@test "as parallel: the file-descriptor limit warning is GNU parallel's (its test filters it out)" {
  as_parallel echo ::: setup >/dev/null
  run bash -c 'ulimit -n 40; seq 3 | "$1" -j20 echo 2>&1' _ "$PWD/bin/parallel"
  [[ $output == *"parallel: Warning: Only enough file handles to run "*" jobs in parallel."* ]]
  [[ $output == *"or increasing /proc/sys/fs/file-max"* ]]
  [ "$(printf '%s\n' "$output" | grep -vc Warning)" -eq 3 ]
}

@test "a program that is not in \$PATH is run by the shell, which reports it (exit 127)" {
  run --separate-stderr env SHELL=/bin/bash "$CONCUR" -k ::: "no-such-cmd-$UNIQ a" 'echo b'
  [ "$status" -eq 1 ] && [ "$output" = b ]
  [[ $stderr == *"no-such-cmd-$UNIQ: command not found"* ]]
  "$CONCUR" --joblog jl "no-such-cmd-$UNIQ" ::: x 2>/dev/null || true
  [ "$(tail -n1 jl | cut -f7)" -eq 127 ]
  # a word from the input that is a shell function exported by bash runs too
  fn() { echo "fn $*"; }
  export -f fn
  [ "$(SHELL=/bin/bash "$CONCUR" ::: 'fn x')" = "fn x" ]
}

@test "grouped output with 2>&1: each job's stderr comes before the next job's stdout" {
  run bash -c '"$1" -k -j4 "echo out {}; echo err {} >&2" ::: 1 2 3 4 5 6 7 8 2>&1' _ "$CONCUR"
  [ "$output" = "$(for i in 1 2 3 4 5 6 7 8; do printf 'out %s\nerr %s\n' $i $i; done)" ]
}

@test "an empty input source is one empty argument when another source is not, as GNU parallel" {
  same_as_parallel -k echo x ::: a b :::: /dev/null
  same_as_parallel -k echo x :::: /dev/null ::: a b
  same_as_parallel -k echo x :::: /dev/null ::: a b :::: /dev/null
  run "$CONCUR" echo x :::: /dev/null :::: /dev/null
  [ "$status" -eq 0 ] && [ -z "$output" ]
}

@test "--results: a column with an empty --header name is named by its number" {
  printf 'Col1\t\nv1\tv2\n' | "$CONCUR" --header : --results res true
  [ -f res/Col1/v1/2/v2/stdout ]
}

@test "as parallel: a record longer than --block is GNU parallel's warning" {
  as_parallel echo ::: setup >/dev/null
  run bash -c 'seq 10 | "$1" -k --pipe --recstart 6 --block 1 "echo a; cat" 2>&1' _ "$PWD/bin/parallel"
  [[ $output == *"parallel: Warning: A record was longer than 1. Increasing to --blocksize 3."* ]]
}
