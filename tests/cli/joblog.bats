#!/usr/bin/env bats
# --joblog FILE, --resume, --resume-failed.

load helpers

HEADER=$'Seq\tHost\tStarttime\tJobRuntime\tSend\tReceive\tExitval\tSignal\tCommand'

@test "--joblog starts with GNU parallel's header line" {
  "$CONCUR" --joblog jl echo ::: a b c >/dev/null
  [ "$(head -n1 jl)" = "$HEADER" ]
}

@test "--joblog writes one line of 9 tab-separated fields per job" {
  "$CONCUR" --joblog jl echo ::: a b c >/dev/null
  [ "$(wc -l <jl)" -eq 4 ]
  [ "$(tail -n +2 jl | awk -F'\t' 'NF != 9' | wc -l)" -eq 0 ]
  [ "$(tail -n +2 jl | cut -f1 | sort -n | paste -sd' ')" = "1 2 3" ]
}

@test "--joblog records each job's exit value" {
  "$CONCUR" --joblog jl 'exit {}' ::: 0 3 7 || true
  [ "$(tail -n +2 jl | sort -n | cut -f7 | paste -sd' ')" = "0 3 7" ]
  [ "$(tail -n +2 jl | cut -f8 | sort -u)" = 0 ]
}

@test "--joblog records the command line, as GNU parallel" {
  need_parallel
  "$CONCUR" --joblog c.log echo x ::: a 'b c' >/dev/null
  parallel --will-cite --joblog p.log echo x ::: a 'b c' >/dev/null
  diff <(tail -n +2 c.log | sort -n | cut -f1,7-9) <(tail -n +2 p.log | sort -n | cut -f1,7-9)
}

@test "--joblog records start time and run time" {
  t0=$(date +%s)
  "$CONCUR" --joblog jl 'sleep 0.3; : {}' ::: x
  start=$(tail -n1 jl | cut -f3)
  runtime=$(tail -n1 jl | cut -f4)
  awk -v s="$start" -v r="$runtime" -v t="$t0" \
    'BEGIN { s += 0; r += 0; exit !(s >= t - 1 && s < t + 5 && r >= 0.3 && r < 3) }'
}

@test "--joblog records a timed-out job as killed by SIGTERM, as GNU parallel" {
  "$CONCUR" --joblog jl --timeout 0.3 'sleep {}' ::: 100.$UNIQ || true
  [ "$(tail -n1 jl | cut -f7-8)" = $'-1\t15' ]
}

@test "--resume skips the jobs already in the joblog" {
  "$CONCUR" --joblog jl 'echo {} >> ran' ::: 1 2 3
  "$CONCUR" --joblog jl --resume 'echo {} >> ran' ::: 1 2 3 4 5
  [ "$(sort -n ran | paste -sd' ')" = "1 2 3 4 5" ]
}

@test "--resume does not rerun failed jobs" {
  "$CONCUR" --joblog jl 'echo {} >> ran; [ {} != 2 ]' ::: 1 2 3 || true
  run "$CONCUR" --joblog jl --resume 'echo {} >> ran; [ {} != 2 ]' ::: 1 2 3
  [ "$status" -eq 0 ]
  [ "$(sort -n ran | paste -sd' ')" = "1 2 3" ]
}

@test "--resume appends the new jobs to the joblog" {
  "$CONCUR" --joblog jl true ::: 1 2
  "$CONCUR" --joblog jl --resume true ::: 1 2 3
  [ "$(grep -c '^Seq' jl)" -eq 1 ]
  [ "$(tail -n +2 jl | cut -f1 | sort -n | paste -sd' ')" = "1 2 3" ]
}

@test "--resume-failed reruns the failed jobs and runs the new ones" {
  "$CONCUR" --joblog jl 'echo {} >> ran; [ {} != 2 ] || [ -e fixed ]' ::: 1 2 3 || true
  touch fixed
  run "$CONCUR" --joblog jl --resume-failed 'echo {} >> ran; [ {} != 2 ] || [ -e fixed ]' ::: 1 2 3 4
  [ "$status" -eq 0 ]
  [ "$(sort -n ran | paste -sd' ')" = "1 2 2 3 4" ]
}

@test "--resume-failed behaves as GNU parallel" {
  need_parallel
  for tool in concur parallel; do
    mkdir "$tool" && cd "$tool"
    cmd=("$CONCUR"); [ "$tool" = parallel ] && cmd=(parallel --will-cite)
    "${cmd[@]}" --joblog jl 'echo {} >> ran; [ {} != 2 ] || [ -e fixed ]' ::: 1 2 3 || true
    touch fixed
    "${cmd[@]}" --joblog jl --resume-failed 'echo {} >> ran; [ {} != 2 ] || [ -e fixed ]' ::: 1 2 3 4
    cd ..
  done
  diff <(sort concur/ran) <(sort parallel/ran)
  diff <(tail -n +2 concur/jl | cut -f1,7-9 | sort) <(tail -n +2 parallel/jl | cut -f1,7-9 | sort)
}
