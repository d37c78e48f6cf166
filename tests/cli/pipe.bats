#!/usr/bin/env bats
# --pipe: standard input cut into blocks at record ends, each block the stdin of one job
# (--block, --recend, --recstart, -N, -L). Outputs are compared with GNU parallel's where
# it is installed.

load helpers

@test "--pipe --block cuts at line ends as GNU parallel does" {
  seq 1 100000 >in
  same_as_parallel --stdin in -k --pipe --block 10k wc -l
  run "$CONCUR" -k --pipe --block 10k wc -l <in
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | awk '{s += $1} END {print s}')" -eq 100000 ]
}

@test "--pipe: every block ends with a whole record, and the blocks make the input" {
  seq 1 5000 >in
  "$CONCUR" -k --pipe --block 1000 \
    'cat >blk.{#}; printf "END:%s\n" "$(tail -c 1 blk.{#} | od -An -tx1 | tr -d " ")"; cat blk.{#}' \
    <in >out
  [ "$(grep -c '^END:' out)" -gt 20 ]
  [ "$(grep -c '^END:' out)" -eq "$(grep -c '^END:0a$' out)" ]
  grep -v '^END:' out | cmp - in
}

@test "--pipe without -k gives every block once, in some order" {
  seq 1 20000 >in
  same_as_parallel --sort --stdin in --pipe --block 5k wc -l
}

@test "--pipe: the input need not end with the record separator" {
  printf 'a\nb\nc\nd\ne' >in
  same_as_parallel --stdin in -k --pipe -N2 'cat; echo .'
  same_as_parallel --stdin in -k --pipe --block 3 'cat; echo .'
}

@test "--recstart cuts before a record's first bytes" {
  printf '>a\nx\n>b\ny\ny\n>c\nz\n>d\n' >in
  same_as_parallel --stdin in -k --pipe --recstart '>' --block 10 'cat; echo ---'
  same_as_parallel --stdin in -k --pipe --recstart '>' -N2 'cat; echo ---'
}

@test "--recend and --recstart together must both match" {
  printf 'p1 l1\np1 l2\n\np2 l1\n\np3\n\n' >in
  same_as_parallel --stdin in -k --pipe --recend '\n\n' -N1 'cat; echo ---'
  same_as_parallel --stdin in -k --pipe --recend 'l1\n' --recstart 'p' -N1 'cat; echo ---'
  same_as_parallel --stdin in -k --pipe --recend '\n' --recstart 'p' --block 8 'cat; echo ---'
}

@test "--recend '' cuts blocks of exactly --block bytes" {
  head -c 1000 /dev/zero | tr '\0' 'x' >in
  same_as_parallel --stdin in -k --pipe --recend '' --block 300 wc -c
}

@test "-N and -n give N records per job; -L makes a record of N lines" {
  seq 1 23 >in
  same_as_parallel --stdin in -k --pipe -N5 'cat; echo ---'
  same_as_parallel --stdin in -k --pipe -n 4 'cat; echo ---'
  same_as_parallel --stdin in -k --pipe -L 3 --block 10 'cat; echo ---'
  same_as_parallel --stdin in -k --pipe -L 2 -N 3 'cat; echo ---'
}

@test "a record longer than --block goes whole, with a warning" {
  { echo short; head -c 5000 /dev/zero | tr '\0' 'y'; echo; echo end; } >in
  same_as_parallel --stdin in -k --pipe --block 100 wc -c
  run "$CONCUR" -k --pipe --block 100 wc -c <in
  [[ "$output" == *"warning: a record is longer than --block 100"* ]]
}

@test "--pipe: {#} and {%} work, {} is empty, nothing is appended to the command" {
  seq 1 9 >in
  same_as_parallel --stdin in -k -j2 --pipe -N3 'echo job {#} {} "[{}]"; wc -l'
  run "$CONCUR" -k -j1 --pipe -N4 'echo {#} {%}' <in
  [ "$output" = "$(printf '1 1\n2 1\n3 1')" ]
}

@test "-k prints the blocks' output in input order" {
  seq 1 5 | "$CONCUR" -k -j5 --pipe -N1 'sleep 0.$((6 - {#})); cat' >out
  seq 1 5 | cmp - out
}

@test "--pipe on empty input runs no job" {
  run "$CONCUR" --pipe 'echo ran' </dev/null
  [ "$status" -eq 0 ]
  [ -z "$output" ]
  : >in
  same_as_parallel --stdin in --pipe 'echo ran'
}

@test "--pipe: failing jobs give the exit status" {
  seq 1 10 >in
  same_as_parallel --stdin in --pipe -N2 'cat >/dev/null; exit 3'
  run "$CONCUR" --pipe -N2 'cat >/dev/null; exit 3' <in
  [ "$status" -eq 5 ]
  seq 1 10 >in
  run "$CONCUR" --pipe -N2 --halt now,fail=1 -j1 'cat >/dev/null; exit {#}' <in
  [ "$status" -eq 1 ]
}

@test "--pipe: a job that reads nothing does not stop the others" {
  seq 1 100000 >in
  run "$CONCUR" -k --pipe --block 50k 'if [ {#} = 2 ]; then exit 0; fi; wc -l' <in
  [ "$status" -eq 0 ]
  [ "$(echo "$output" | wc -l)" -gt 5 ]
}

@test "--pipe --timeout kills a block's job" {
  seq 1 3 >in
  local rc=0
  "$CONCUR" -k --pipe -N1 --timeout 1 'read x; if [ $x = 2 ]; then sleep 30.'"$UNIQ"'; fi; echo $x' \
    <in >out 2>err || rc=$?
  [ "$rc" -eq 1 ]
  [ "$(cat out)" = "$(printf '1\n3')" ]
  grep -q 'timed out' err
}

@test "--pipe --joblog logs the bytes sent to each job" {
  seq 1 10 | "$CONCUR" -k --pipe -N4 --joblog log cat >/dev/null
  [ "$(cut -f 5 log | tail -n +2 | tr '\n' ' ')" = "8 8 5 " ]
  [ "$(cut -f 9 log | tail -n +2 | sort -u)" = "cat" ]
}

@test "--pipe options are refused without --pipe, and --pipe without a command" {
  run "$CONCUR" --recend x echo ::: a
  [ "$status" -eq 2 ]
  [[ "$output" == *"--recend needs --pipe"* ]]
  run "$CONCUR" --pipe -N 0 cat </dev/null
  [ "$status" -eq 2 ]
  run "$CONCUR" --pipe -n 0 cat </dev/null
  [ "$status" -eq 2 ]
  run "$CONCUR" --block 1M echo ::: a
  [ "$status" -eq 2 ]
  run "$CONCUR" --pipe echo ::: a
  [ "$status" -eq 2 ]
  run "$CONCUR" --pipe </dev/null
  [ "$status" -eq 2 ]
  run "$CONCUR" --pipe --block 0 cat </dev/null
  [ "$status" -eq 2 ]
  run "$CONCUR" --pipe --block 1X cat </dev/null
  [ "$status" -eq 2 ]
  run "$CONCUR" --pipe --halt soon,fail=50% cat </dev/null
  [ "$status" -eq 2 ]
}

@test "--block takes GNU parallel's unit prefixes" {
  head -c 5000 /dev/zero | tr '\0' 'z' >in
  run "$CONCUR" -k --pipe --recend '' --block 2K wc -c <in
  [ "$output" = "$(printf '2048\n2048\n904')" ]
  run "$CONCUR" -k --pipe --recend '' --block 2k wc -c <in
  [ "$output" = "$(printf '2000\n2000\n1000')" ]
}

@test "--pipe streams: 200 MB through it in bounded memory" {
  [[ -x /usr/bin/time ]] || skip "/usr/bin/time is not installed"
  local limit=32768
  [[ -n "${CONCUR_SANITIZE:-}" ]] && limit=262144 # the sanitizers' own memory
  yes 'a line of 36 bytes with its newline' | head -c 200M |
    /usr/bin/time -f '%M' -o rss "$CONCUR" --pipe --block 1M wc -l >counts
  [ "$(awk '{s += $1} END {print s}' counts)" -eq $((200 * 1024 * 1024 / 36)) ]
  echo "peak RSS $(cat rss) KB" >&3
  [ "$(cat rss)" -lt "$limit" ]
}

@test "--pipe: waiting for slow input holds up no running job" {
  # The first block's job must get its block, end and be printed while the input is quiet;
  # with --timeout 2 it would be killed if the wait for the next block held it up.
  local rc=0
  { echo first; sleep 3; echo second; } |
    "$CONCUR" --pipe --block 6 --timeout 2 --joblog log 'cat; date +%s' >out 2>err || rc=$?
  [ "$rc" -eq 0 ]
  [ "$(grep -c -e first -e second out)" -eq 2 ]
  # The first job ended well before the second line came.
  [ "$(awk 'NR == 2 {print $4 < 1}' log)" -eq 1 ]
  ! grep -q 'timed out' err
}

@test "--pipe --retries gives a failing job its block again" {
  seq 1 4 | "$CONCUR" --pipe -N2 --retries 3 'cat >>seen; exit 1' || true
  [ "$(wc -l <seen)" -eq 12 ]
  [ "$(sort seen | uniq -c | awk '{print $1}' | sort -u)" = 3 ]
}

@test "--pipe with --line-buffer and -u" {
  seq 1 1000 >in
  "$CONCUR" --pipe --block 1k --line-buffer cat <in | sort -n | cmp - in
  "$CONCUR" --pipe --block 1k -u cat <in | sort -n | cmp - in
}

@test "--pipe: blocks that end exactly at the end of a round, and at the end of the input" {
  head -c 4096 /dev/zero | tr '\0' 'q' >in
  run "$CONCUR" -k --pipe --recend '' --block 1K wc -c <in
  [ "$output" = "$(printf '1024\n1024\n1024\n1024')" ]
  seq 1 12 >in
  same_as_parallel --stdin in -k --pipe -N 3 --block 9 'cat; echo ---'
}

@test "--pipe: a signal stops it while it waits for a quiet pipe" {
  mkfifo fifo
  { echo a; sleep 20.$UNIQ; } >fifo &
  local t0=$SECONDS rc=0
  "$CONCUR" --pipe --block 2 cat <fifo >out &
  local pid=$!
  sleep 0.5
  kill -TERM "$pid"
  wait "$pid" || rc=$?
  [ "$rc" -eq 143 ]
  [ $((SECONDS - t0)) -lt 10 ]
}
