#!/usr/bin/env bats
# Nothing is lost: a job is in the joblog only once its output was delivered; full disks,
# kills and torn joblog lines; jobs that leave daemons behind; hostile input.

load helpers
bats_require_minimum_version 1.5.0

# Several tests run GNU parallel many times, or move 100 MB: room for a loaded machine.
BATS_TEST_TIMEOUT=120

# idle_with_one_child PID: PID has exactly one child left and is asleep (waiting for events)
idle_with_one_child() {
  [ "$(pgrep -P "$1" | wc -l)" -eq 1 ] && grep -q '^State:[[:space:]]*S' "/proc/$1/status"
}

# logged_seqs JOBLOG: the Seq of every job line (not the header), one a line
logged_seqs() { tail -n +2 "$1" | cut -f1; }

@test "stdout on /dev/full: no job is logged as done, and the message names the path" {
  rc=0; "$CONCUR" -j1 --joblog jl echo ::: a b c >/dev/full 2>err || rc=$?
  [ "$rc" -eq 255 ]
  grep -q "/dev/full" err
  [ -z "$(logged_seqs jl)" ] || { echo "logged: $(cat jl)"; false; }
}

@test "stdout on a full disk: only jobs whose whole output was written are logged" {
  mount_tmpfs fs 64
  # 20000 bytes a job: three fit in 64 KiB, the fourth does not
  rc=0
  "$CONCUR" -j2 --joblog jl 'head -c 20000 /dev/zero | tr "\0" {}' ::: a b c d e f g h \
    >fs/out 2>err || rc=$?
  [ "$rc" -eq 255 ]
  grep -qF "$BATS_TEST_TMPDIR/fs/out" err || { echo "stderr: $(cat err)"; false; }
  size=$(wc -c <fs/out)
  n=$(logged_seqs jl | wc -l)
  # every logged job's 20000 bytes are in the file, whole
  [ $((n * 20000)) -le "$size" ] || { echo "$n logged, $size bytes written"; false; }
  for s in $(logged_seqs jl); do
    arg=$(printf '%s' abcdefgh | cut -c"$s")
    [ "$(tr -cd "$arg" <fs/out | wc -c)" -eq 20000 ] || { echo "job $s logged, output cut"; false; }
  done
}

@test "--results on a full disk: only jobs whose files were written are logged" {
  mount_tmpfs fs 64
  run --separate-stderr "$CONCUR" -j2 --joblog jl --results fs/res \
    'head -c 20000 /dev/zero; : {}' ::: a b c d e f g h
  [ "$status" -ne 0 ]
  [[ $stderr == *"fs/res/1/"* ]] || { echo "stderr: $stderr"; false; }
  [ "$(logged_seqs jl | wc -l)" -lt 8 ]
  for s in $(logged_seqs jl); do
    arg=$(printf '%s' abcdefgh | cut -c"$s")
    [ "$(wc -c <"fs/res/1/$arg/stdout")" -eq 20000 ] || { echo "job $s logged, file cut"; false; }
  done
}

@test "--results that cannot be written: the job is not logged, the message names the file" {
  mkdir res
  : >res/1 # a file where the directory for argument 1 should be
  run --separate-stderr "$CONCUR" -j1 --joblog jl --results res echo ::: a b
  [ "$status" -eq 255 ]
  [[ $stderr == *"res/1/a"* ]] || { echo "stderr: $stderr"; false; }
  [ -z "$(logged_seqs jl)" ] || { echo "logged: $(cat jl)"; false; }
}

@test "-k: jobs waiting for their turn are logged only once printed" {
  # Job 1 is slow; 2..5 end first and wait for it. Killed before job 1 ends, concur must
  # not have logged them.
  start_bg out err -k -j5 --joblog jl "if [ {} = 1 ]; then sleep 20.$UNIQ; fi; echo {}" \
    ::: 1 2 3 4 5
  # 2..5 done: only job 1's shell is left, and concur is asleep (it handled their ends)
  wait_until 10 idle_with_one_child "$BG_PID"
  kill -KILL "$BG_PID"; wait "$BG_PID" || true
  [ -z "$(logged_seqs jl)" ] || { echo "logged without output: $(cat jl)"; false; }
  [ ! -s out ]
}

@test "20 random SIGKILL/SIGINT/SIGTERM, each followed by --resume: 0 lost, 0 duplicated" {
  run "$CLI_SOURCE_DIR/tests/stress/kill_resume.sh" "$CONCUR" 20 200
  echo "$output"
  [ "$status" -eq 0 ]
}

# joblog_well_formed FILE: every line has the 9 fields and the file ends with a newline
joblog_well_formed() {
  [ "$(tail -c1 "$1" | od -An -c | tr -d ' ')" = '\n' ] || { echo "no final newline"; return 1; }
  local bad
  bad=$(awk -F'\t' 'NF != 9' "$1")
  [ -z "$bad" ] || { echo "malformed lines: $bad"; return 1; }
}

@test "a joblog line cut short by a full disk is removed: never a partial line" {
  mount_tmpfs fs 16
  long=$(printf 'x%.0s' $(seq 700)) # lines of about 760 bytes: they straddle pages
  cmd="echo $long >/dev/null; : "
  "$CONCUR" -j1 --joblog fs/jl "$cmd" ::: 1 2 3
  head -c 1M /dev/zero >fs/fill 2>/dev/null || true # the disk is now full
  rc=0; "$CONCUR" -j1 --joblog fs/jl --resume "$cmd" ::: $(seq 8) 2>err || rc=$?
  [ "$rc" -eq 255 ]
  grep -q "cannot write the joblog 'fs/jl'" err
  joblog_well_formed fs/jl
  rm fs/fill
  "$CONCUR" -j1 --joblog fs/jl --resume "$cmd" ::: $(seq 8)
  joblog_well_formed fs/jl
  [ "$(tail -n +2 fs/jl | cut -f1 | sort -n | paste -sd' ')" = "$(seq 8 | paste -sd' ')" ]
}

@test "--resume ignores a torn last joblog line, says so, and reruns that job" {
  printf '%s\n' "Seq	Host	Starttime	JobRuntime	Send	Receive	Exitval	Signal	Command" \
    "1	:	1.000	     0.100	0	2	0	0	echo 1" >jl
  printf '2\t:\t1.000\t     0.100\t0\t2\t0\t0\techo' >>jl # cut in the middle of the command
  run --separate-stderr "$CONCUR" -k --joblog jl --resume echo ::: 1 2 3
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf '2\n3')" ]
  [[ $stderr == *"joblog 'jl' ends with an incomplete line"* ]] || { echo "stderr: $stderr"; false; }
  joblog_well_formed jl
  [ "$(tail -n +2 jl | cut -f1 | paste -sd' ')" = "1 2 3" ]
}

@test "--timeout ends a job whose daemon holds its stdout (GNU parallel ends it too)" {
  t0=$EPOCHREALTIME
  run --separate-stderr timeout -k 1 20 "$CONCUR" --timeout 1 --joblog jl \
    "setsid sleep 12.$UNIQ & sleep 30.$UNIQ; : {}" ::: x
  t1=$EPOCHREALTIME
  [ "$status" -eq 1 ]
  elapsed_between "$t0" "$t1" 1 4
  [ "$(tail -n1 jl | cut -f7,8)" = "$(printf -- '-1\t15')" ]
}

@test "a job ends with its process: a daemon holding its stdout gets a short grace" {
  t0=$EPOCHREALTIME
  run --separate-stderr timeout -k 1 20 "$CONCUR" "setsid sleep 12.$UNIQ & echo {}" ::: x
  t1=$EPOCHREALTIME
  [ "$status" -eq 0 ]
  [ "$output" = "x" ]
  elapsed_between "$t0" "$t1" 0 3
}

@test "output written just before the process exits is kept in full" {
  # The shell's last write is still in the pipe when it exits.
  "$CONCUR" -j4 'setsid sleep 12.'"$UNIQ"' & head -c 200000 /dev/zero | tr "\0" {}' \
    ::: a b c d >out
  [ "$(wc -c <out)" -eq 800000 ]
}

@test "SIGTERM ends concur promptly while a daemon holds a job's stdout" {
  start_bg out err --joblog jl "setsid sleep 12.$UNIQ & sleep 30.$UNIQ; : {}" ::: x
  wait_until 10 pgrep -f "30.$UNIQ"
  t0=$EPOCHREALTIME
  kill -TERM "$BG_PID"
  rc=0; wait "$BG_PID" || rc=$?
  t1=$EPOCHREALTIME
  [ "$rc" -eq 143 ]
  elapsed_between "$t0" "$t1" 0 3
  [ -z "$(tail -n +2 jl)" ]
}

# exit_and_signal TOOL LINE: "Exitval Signal" of the joblog of one job of LINE ::: a
exit_and_signal() {
  local tool=$1 line=$2
  if [ "$tool" = concur ]; then
    "$CONCUR" --joblog jl.c "$line" ::: a >/dev/null 2>&1 || true
    tail -n1 jl.c | cut -f7,8
  else
    parallel --will-cite --joblog jl.p "$line" ::: a >/dev/null 2>&1 || true
    tail -n1 jl.p | cut -f7,8
  fi
}

@test "a job killed by a signal through the shell is logged with the signal (GNU parallel's way)" {
  printf '#!/bin/sh\nkill -9 $$\n' >killme
  chmod +x killme
  k=$BATS_TEST_TMPDIR/killme
  # the last simple command of the line is exec'd, as bash -c does for GNU parallel
  for line in "true; $k {}" "true && $k {}" "false || $k {}" "cd /; X=1 $k {}" \
    "x=\$(echo 1); $k {}"; do
    [ "$(exit_and_signal concur "$line")" = "$(printf '0\t9')" ] || {
      echo "concur logs $(exit_and_signal concur "$line") for: $line"; false; }
  done
  # not exec'd (a redirection, a pipe, a group, a later command): the shell's 128 + 9
  for line in "$k {} >/dev/null" "echo | $k {}" "{ $k {}; }" "$k {}; true"; do
    want=$'137\t0'
    [[ $line == *"; true" ]] && want=$'0\t0'
    [ "$(exit_and_signal concur "$line")" = "$want" ] || {
      echo "concur logs $(exit_and_signal concur "$line") for: $line"; false; }
  done
}

@test "signals through the shell: the joblog's Exitval and Signal are GNU parallel's" {
  need_parallel
  printf '#!/bin/sh\nkill -9 $$\n' >killme
  chmod +x killme
  k=$BATS_TEST_TMPDIR/killme
  for line in "$k {}" "true; $k {}" "true && $k {}" "X=1 $k {}" "$k {} >/dev/null" \
    "echo | $k {}" "sleep 0 & $k {}" "if true; then $k {}; fi"; do
    c=$(exit_and_signal concur "$line")
    p=$(exit_and_signal parallel "$line")
    [ "$c" = "$p" ] || { echo "for: $line: concur '$c', GNU parallel '$p'"; false; }
  done
}

@test "exec'ing the last command keeps the line's meaning" {
  run "$CONCUR" -k 'cd / && X=ok sh -c "echo \$X \$PWD"; : {}; X=1 printenv X' ::: a
  [ "$status" -eq 0 ]
  [ "$output" = "$(printf 'ok /\n1')" ]
  # a builtin keeps its shell's meaning (not exec'd): dash's echo reads \t, bash's does not
  run env SHELL=/bin/sh "$CONCUR" -k 'echo "a\tb" {}' ::: x
  [ "$output" = "$(sh -c 'echo "a\tb" x')" ]
  run env SHELL=/bin/bash "$CONCUR" -k 'echo "a\tb" {}' ::: x
  [ "$output" = "$(bash -c 'echo "a\tb" x')" ]
}

@test "a NUL inside an input line stays in one argument as \\0, with a warning (as GNU parallel)" {
  printf 'a\0--evil\nb\n' >in
  run --separate-stderr "$CONCUR" -k printf '[%s]' {} x <in
  [ "$status" -eq 0 ]
  [ "$output" = '[a\0--evil][x][b][x]' ]
  [[ $stderr == *"NUL character in the input was replaced"* ]] || { echo "stderr: $stderr"; false; }
  # shell mode, --colsep and a :::: file too
  run --separate-stderr "$CONCUR" -k 'printf "[%s]" {} x' :::: in
  [ "$output" = '[a\0--evil][x][b][x]' ]
  run --separate-stderr "$CONCUR" -k --colsep - printf '[%s]' {1} {3} x <in
  [ "$output" = '[a\0][evil][x][b][x]' ]
  same_as_parallel --stdin in -k printf '[%s]' {} x
}

@test "an empty quoted word next to a placeholder that gives nothing stays a word" {
  printf '#!/bin/sh\nfor a; do printf "[%%s]" "$a"; done\n' >printargs
  chmod +x printargs
  p=$BATS_TEST_TMPDIR/printargs # a simple line: exec'd without a shell
  run "$CONCUR" "$p" "''{2}" x ::: a
  [ "$output" = "[][x]" ]
  run "$CONCUR" --shell "$p" "''{2}" x ::: a
  [ "$output" = "[][x]" ]
  same_as_parallel "$p" "''{2}" '""{3}' "{3}" x ::: a
}

@test "-d with a bad \\x escape is refused with a clear message" {
  run --separate-stderr "$CONCUR" -d '\xZZ' echo ::: a
  [ "$status" -eq 2 ]
  [[ $stderr == *"bad value for -d: '\\xZZ' (\\x needs one or two hexadecimal digits"* ]] || {
    echo "stderr: $stderr"; false; }
  run "$CONCUR" -k -d '\x1f' echo < <(printf 'a\x1fb')
  [ "$output" = "$(printf 'a\nb')" ]
}

@test "TMPDIR full: the message names it, the jobs are not logged, no partial output" {
  mount_tmpfs fs 1024
  # 20 MB a job: past the 16 MiB kept in memory, output spills to TMPDIR, which is full
  rc=0
  TMPDIR=$BATS_TEST_TMPDIR/fs "$CONCUR" -j2 --joblog jl 'head -c 20000000 /dev/zero; echo {}' \
    ::: a b c >out 2>err || rc=$?
  [ "$rc" -eq 255 ]
  grep -qF "temporary directory '$BATS_TEST_TMPDIR/fs'" err || { echo "stderr: $(cat err)"; false; }
  [ -z "$(logged_seqs jl)" ] || { echo "logged: $(cat jl)"; false; }
  [ ! -s out ] || { echo "$(wc -c <out) bytes of partial output printed"; false; }
}

@test "TMPDIR missing: the message names it, no job is logged as done" {
  rc=0
  TMPDIR=$BATS_TEST_TMPDIR/no/such/dir "$CONCUR" --joblog jl 'head -c 20000000 /dev/zero; : {}' \
    ::: a >out 2>err || rc=$?
  [ "$rc" -eq 255 ]
  grep -qF "temporary directory '$BATS_TEST_TMPDIR/no/such/dir'" err || { echo "stderr: $(cat err)"; false; }
  [ -z "$(logged_seqs jl)" ]
  [ ! -s out ]
}

@test "--tmpdir: output past the memory cap spills there (a missing one is named), not in TMPDIR" {
  mkdir -p spill
  rc=0
  TMPDIR=$BATS_TEST_TMPDIR/no/such/dir "$CONCUR" --tmpdir spill 'head -c 3000000 /dev/zero; : {}' \
    ::: a >out 2>err || rc=$?
  [ "$rc" -eq 0 ] || { echo "stderr: $(cat err)"; false; }
  [ "$(wc -c <out)" -eq 3000000 ]
  rc=0
  "$CONCUR" --tmpdir no/such/spill 'head -c 20000000 /dev/zero; : {}' ::: a >out 2>err || rc=$?
  [ "$rc" -eq 255 ]
  grep -qF "temporary directory 'no/such/spill'" err || { echo "stderr: $(cat err)"; false; }
}

@test "-j0 under a low open-file limit warns and runs as many jobs as the descriptors allow" {
  run --separate-stderr bash -c 'ulimit -n 48 && exec "$0" -j0 "echo {}" ::: $(seq 100)' "$CONCUR"
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$output" | sort -n | paste -sd' ')" = "$(seq 100 | paste -sd' ')" ]
  [[ $stderr == *"only enough file descriptors (ulimit -n 48) to run"* ]] || { echo "stderr: $stderr"; false; }
  # a -j above the limit too
  run --separate-stderr bash -c 'ulimit -n 48 && exec "$0" -j40 "echo {}" ::: $(seq 100)' "$CONCUR"
  [ "$status" -eq 0 ]
  [ "${#lines[@]}" -eq 100 ]
  [[ $stderr == *"only enough file descriptors"* ]]
  # a limit that does not bite says nothing
  run --separate-stderr bash -c 'ulimit -n 48 && exec "$0" -j0 "echo {}" ::: 1 2' "$CONCUR"
  [ "$status" -eq 0 ]
  [ -z "$stderr" ]
}

@test "--results with an argument over 255 bytes: the name is cut as GNU parallel cuts it" {
  long=$(printf 'x%.0s' $(seq 300))
  slashes=$(printf 'a/%.0s' $(seq 200)) # escaped to 600 bytes
  run "$CONCUR" --results res echo ::: "$long" "$slashes" short
  [ "$status" -eq 0 ]
  [ "$(cat "res/1/$(printf 'x%.0s' $(seq 255))/stdout")" = "$long" ]
  [ "$(cat res/1/short/stdout)" = short ]
  need_parallel
  parallel --will-cite --results gnu echo ::: "$long" "$slashes" short
  diff <(cd res && find . | sort) <(cd gnu && find . | sort)
}

@test "--line-buffer is linear on a long line without newline (100 MB)" {
  # 100 MB with no newline: about 0.7 s unloaded; a rescan of the pending bytes at every
  # read (quadratic) took 8.8 s. Measured against the same bytes through -u (no line
  # handling at all) in the same conditions, so that the load of the machine cancels out.
  # Also 25 MB: four times the bytes must take about four times as long (a quadratic scan
  # takes sixteen), whatever the speed of the build (sanitizers) and of the machine.
  t0=$EPOCHREALTIME
  "$CONCUR" -u 'head -c 100000000 /dev/zero; : {}' ::: 1 >out
  t1=$EPOCHREALTIME
  "$CONCUR" --line-buffer 'head -c 100000000 /dev/zero; : {}' ::: 1 >out
  t2=$EPOCHREALTIME
  [ "$(wc -c <out)" -eq 100000000 ]
  "$CONCUR" --line-buffer 'head -c 25000000 /dev/zero; : {}' ::: 1 >out
  t3=$EPOCHREALTIME
  [ "$(wc -c <out)" -eq 25000000 ]
  base=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
  big=$(awk -v a="$t1" -v b="$t2" 'BEGIN{print b-a}')
  small=$(awk -v a="$t2" -v b="$t3" 'BEGIN{print b-a}')
  echo "-u: $base s; --line-buffer: $big s (100 MB), $small s (25 MB)"
  awk -v b="$big" -v s="$small" 'BEGIN{exit !(b < 8 * s + 0.5)}'
  if [ -z "${CONCUR_SANITIZE:-}" ]; then
    elapsed_between "$t1" "$t2" 0 "$(awk -v b="$base" 'BEGIN{print 4 * b + 2}')"
  fi
  # and lines still come out whole, as they end
  run "$CONCUR" --line-buffer -k --tag 'printf "a%.0s" $(seq 5000); echo; printf b' ::: x
  [ "${#lines[@]}" -eq 2 ]
  [ "${#lines[0]}" -eq 5002 ]
  [ "${lines[1]}" = "$(printf 'x\tb')" ]
}

# peak_rss_kb FILE: the "Maximum resident set size" that /usr/bin/time -v wrote to FILE
peak_rss_kb() { awk -F': ' '/Maximum resident set size/ {print $2}' "$1"; }

@test "grouped output spills: a 100 MB job peaks at 16 MB of memory at most, output exact" {
  [ -x /usr/bin/time ] || skip "/usr/bin/time is not installed"
  [ -z "${CONCUR_SANITIZE:-}" ] || skip "peak RSS is not meaningful under ${CONCUR_SANITIZE} sanitizer"
  mkdir tmp
  head -c 100000000 /dev/urandom >src
  TMPDIR=$BATS_TEST_TMPDIR/tmp /usr/bin/time -v -o rss "$CONCUR" cat ::: src >out
  cmp src out
  echo "peak RSS: $(peak_rss_kb rss) kB"
  [ "$(peak_rss_kb rss)" -le 16384 ]
  TMPDIR=$BATS_TEST_TMPDIR/tmp /usr/bin/time -v -o rss "$CONCUR" --tag cat ::: src >out
  echo "peak RSS with --tag: $(peak_rss_kb rss) kB"
  [ "$(peak_rss_kb rss)" -le 16384 ]
  [ -z "$(ls -A tmp)" ] # the spill files were unlinked
}

@test "--colsep is a Perl regular expression (PCRE2), as GNU parallel's" {
  printf 'a1,b22;c\tD x\n' >in
  for re in '\d+' '[,;]' '(?<=b)\d' '\s' ',|;' '\W+?' '(?i)B'; do
    same_as_parallel --stdin in -k --colsep "$re" echo {1}:{2}:{3}
  done
}

@test "--colsep with stacked quantifiers fails fast with a clear message" {
  t0=$EPOCHREALTIME
  run --separate-stderr "$CONCUR" --colsep '(a{0,200}){0,200}{0,200}{0,200}' echo {1} ::: xay
  t1=$EPOCHREALTIME
  [ "$status" -eq 2 ]
  [[ $stderr == *"bad --colsep"*"quantifier"* ]] || { echo "stderr: $stderr"; false; }
  elapsed_between "$t0" "$t1" 0 2
  # a pattern that backtracks without end on a line gives up at the match limit
  t0=$EPOCHREALTIME
  run --separate-stderr "$CONCUR" --colsep '(\w|\w\w)+\d' echo {1} ::: "$(printf 'a%.0s' $(seq 60))"
  t1=$EPOCHREALTIME
  [ "$status" -ne 0 ]
  [[ $stderr == *"match limit"* ]] || { echo "stderr: $stderr"; false; }
  elapsed_between "$t0" "$t1" 0 5
}

@test "the joblog's Receive counts stdout bytes (GNU parallel), also with --line-buffer and -k" {
  for opts in "" "--line-buffer" "-k" "--line-buffer -k"; do
    # shellcheck disable=SC2086
    "$CONCUR" $opts -j2 --joblog jl 'printf "%{}s" "" | tr " " x; echo err >&2' ::: 7 100000 \
      >/dev/null 2>&1
    [ "$(tail -n +2 jl | sort -n | cut -f6 | paste -sd' ')" = "7 100000" ] || {
      echo "Receive with '$opts': $(tail -n +2 jl | cut -f1,6 | paste -sd' ')"; false; }
  done
  need_parallel
  parallel --will-cite --joblog gnu 'printf "%{}s" "" | tr " " x; echo err >&2' ::: 7 >/dev/null 2>&1
  [ "$(tail -n1 gnu | cut -f6)" = 7 ]
}

@test "--bar on a terminal: the last line is drawn once and the cursor left below it" {
  command -v script >/dev/null || skip "script(1) is not installed (a terminal is needed)"
  script -qec "$CONCUR --bar true ::: 1 2 3" /dev/null >tty.out </dev/null
  od -c tty.out | tail -4
  [ "$(grep -o '100% 3/3' tty.out | wc -l)" -eq 1 ]
  [ "$(tail -c 2 tty.out | od -An -c | tr -d ' ')" = '\r\n' ] # ends with a newline
}

@test "--progress elsewhere: the final line is not printed twice" {
  run --separate-stderr "$CONCUR" --progress 'sleep 1.2; : {}' ::: x
  [ "$status" -eq 0 ]
  echo "$stderr"
  [ "$(grep -c 'done 1' <<<"$stderr")" -eq 1 ]
}

@test "SIGHUP: the output of finished jobs is printed and logged, the running job is not" {
  # -k: job 1 is slow; 2..5 end first and wait for their turn when SIGHUP comes.
  start_bg out err -k -j5 --joblog jl "if [ {} = 1 ]; then sleep 20.$UNIQ; fi; echo {}" \
    ::: 1 2 3 4 5
  wait_until 10 idle_with_one_child "$BG_PID"
  kill -HUP "$BG_PID"
  rc=0; wait "$BG_PID" || rc=$?
  [ "$rc" -eq 129 ]
  [ "$(sort out | paste -sd' ')" = "2 3 4 5" ]
  [ "$(logged_seqs jl | sort -n | paste -sd' ')" = "2 3 4 5" ]
  assert_no_process "20.$UNIQ"
}
