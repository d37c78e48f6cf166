#!/usr/bin/env bats
# concur --mpi: `mpirun -n 3 concur --mpi ...` runs -j jobs at a time on each of the 3
# (localhost) ranks, through tests/mpi/mpirun.sh, and rank 0 prints, logs and decides exactly
# as a local run does. Skipped where concur-mpi was not built (no MPI) or mpirun cannot start ranks.
load helpers

setup_file() {
  export BATS_TEST_TIMEOUT=120
}

setup() {
  concur_setup
  [[ -x "${CONCUR%/*}/concur-mpi" ]] || skip "concur-mpi was not built (no MPI found)"
  [[ -n "${MPIEXEC:-}" ]] || skip "no mpiexec was found"
}

# mpi ARGS...: mpirun -n 3 concur --mpi ARGS (status 77, a skip, when ranks cannot start).
mpi() {
  bash "$CLI_SOURCE_DIR/tests/mpi/mpirun.sh" "$MPIEXEC" "$CONCUR" --mpi "$@"
}

skip_if_no_ranks() {
  if [[ $status -eq 77 ]]; then skip "mpirun cannot start ranks here: $output"; fi
}

@test "--mpi: jobs run on every rank, -j on each; output, -k and --tag as in a local run" {
  local rc=0
  mpi -k --tag -j2 'echo rank $OMPI_COMM_WORLD_RANK >rank.{}; echo out {}; echo err {} >&2' \
    ::: a b c d e f >mpi.out 2>mpi.err || rc=$?
  if [[ $rc -eq 77 ]]; then skip "mpirun cannot start ranks here: $(cat mpi.out)"; fi
  [[ $rc -eq 0 ]]
  local ranks
  ranks=$(cat rank.* | sort -u | tr '\n' ' ')
  [[ $ranks == "rank 0 rank 1 rank 2 " ]] || { echo "ranks: $ranks"; return 1; }
  "$CONCUR" -k --tag -j2 'echo out {}; echo err {} >&2' ::: a b c d e f >local.out 2>local.err
  # mpirun forwards rank 0's stdout and stderr apart: each compared on its own
  diff mpi.out local.out
  diff <(grep -E '^[a-f]	' mpi.err) local.err
}

@test "--mpi: the joblog's Host names the rank's host; --resume runs only what is not logged" {
  run mpi --joblog jl 'echo {}; exit {}' ::: 0 1 2
  skip_if_no_ranks
  [[ $status -eq 2 ]] # two jobs failed
  local host
  host=$(hostname)
  [[ $(head -1 jl) == Seq$'\t'Host* ]]
  [[ $(tail -n +2 jl | cut -f2 | sort -u) == "$host" ]]
  [[ $(tail -n +2 jl | cut -f1,7 | sort | tr '\t\n' ': ') == "1:0 2:1 3:2 " ]]
  run mpi --joblog jl --resume 'echo {}; exit {}' ::: 0 1 2 3 4
  [[ $status -eq 2 ]]
  [[ $(printf '%s\n' "$output" | grep -E '^[0-9]$' | sort | tr '\n' ' ') == "3 4 " ]]
  [[ $(tail -n +2 jl | wc -l) -eq 5 ]]
}

@test "--mpi --timeout: the rank kills the job (Exitval -1, signal 15), nothing left running" {
  local t0=$EPOCHREALTIME
  # {}.000$UNIQ: the first job sleeps about 1 ms, far from the timeout on a loaded machine
  run mpi -j1 --timeout 1 --joblog jl "sleep {}.000$UNIQ; echo done" ::: 0 30 # 30: on rank 1
  skip_if_no_ranks
  [[ $status -eq 1 ]]
  elapsed_between "$t0" "$EPOCHREALTIME" 1 25
  [[ $(printf '%s\n' "$output" | grep -c '^done$') -eq 1 ]]
  [[ $(grep -c "$(printf '\t%s\t%s\t' -1 15)sleep 30" jl) -eq 1 ]]
  assert_no_process "sleep 30.000$UNIQ"
}

@test "--mpi --halt now,fail=1: the jobs running on other ranks are killed" {
  local t0=$EPOCHREALTIME
  run mpi -j1 --halt now,fail=1 "sleep {}.$UNIQ; exit 1" ::: 0 60 60
  skip_if_no_ranks
  [[ $status -eq 1 ]]
  elapsed_between "$t0" "$EPOCHREALTIME" 0 30
  assert_no_process "sleep 60.$UNIQ"
}

@test "--mpi: PARALLEL_ENV's code runs before the jobs of every rank, and is not in their environment" {
  PARALLEL_ENV='myvar=penv' run mpi -k -j1 'echo $myvar {} $(env | grep -c ^PARALLEL_ENV=)' ::: a b c d
  skip_if_no_ranks
  [[ $status -eq 0 ]]
  [[ $(printf '%s\n' "$output" | grep -E '^penv [a-d] 0$' | tr '\n' ' ') == "penv a 0 penv b 0 penv c 0 penv d 0 " ]]
}

@test "--mpi --retries: a failing job runs again (on any rank) until it succeeds" {
  run mpi --retries 3 'n=$(cat n 2>/dev/null || echo 0); echo $((n + 1)) >n; [ $n -ge 2 ] && echo ok {}' ::: x
  skip_if_no_ranks
  [[ $status -eq 0 ]]
  [[ $(cat n) -eq 3 ]]
  [[ $(printf '%s\n' "$output" | grep -c '^ok x$') -eq 1 ]]
}

@test "--mpi --results and a command not found: as in a local run" {
  run mpi --results res.csv 'printf "%s" {}' ::: one two
  skip_if_no_ranks
  [[ $status -eq 0 ]]
  "$CONCUR" --results local.csv 'printf "%s" {}' ::: one two
  # the same rows but for Host (the rank's), Starttime and JobRuntime
  diff <(cut -d, -f1,5- res.csv | sort) <(cut -d, -f1,5- local.csv | sort)
  [[ $(tail -n +2 res.csv | cut -d, -f2 | sort -u) == "$(hostname)" ]]
  run mpi --joblog jl nosuchcmd$UNIQ ::: a
  [[ $status -eq 1 ]]
  [[ $output == *"nosuchcmd$UNIQ"* ]]
  [[ $(tail -n +2 jl | cut -f7) == 127 ]]
}

@test "--mpi refuses what needs the output as it comes; without mpirun it is a local run" {
  run mpi --line-buffer echo ::: a
  skip_if_no_ranks
  [[ $status -eq 2 ]]
  [[ $output == *"--mpi"*"--line-buffer"* ]]
  run "$CONCUR" --mpi --joblog jl echo ::: a b
  [[ $status -eq 0 ]]
  [[ $output == $'a\nb' || $output == $'b\na' ]]
  [[ $(tail -n +2 jl | cut -f2 | sort -u) == ":" ]]
}

running_sleeps() { [[ $(pgrep -c -f -- "^sleep 60\.$UNIQ") -eq $1 ]]; } # the jobs, not concur

@test "--mpi: SIGTERM to mpirun stops the jobs on every rank; nothing is left, nothing logged" {
  bash "$CLI_SOURCE_DIR/tests/mpi/mpirun.sh" "$MPIEXEC" "$CONCUR" --mpi -j1 --joblog jl \
    "sleep 60.$UNIQ" ::: 1 2 3 >out 2>err &
  local pid=$!
  # one job per rank (-j1 on each of the 3): all three running; or mpirun could not start
  local deadline=$((SECONDS + 60))
  until running_sleeps 3; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" && status=0 || status=$?
      output=$(cat out)
      skip_if_no_ranks
      echo "mpirun ended with $status before the jobs ran: $output $(cat err)"; return 1
    fi
    if ((SECONDS > deadline)); then
      echo "not 3 jobs running after 60 s:"; pgrep -a -f -- "$UNIQ"; cat out err
      kill -TERM "$pid"; wait "$pid" || true
      return 1
    fi
    sleep 0.02
  done
  kill -TERM "$pid"
  local rc=0
  wait "$pid" || rc=$?
  [[ $rc -ne 0 ]]
  assert_no_process "sleep 60.$UNIQ"
  wait_until 10 no_process_matching "--mpi -j1 --joblog jl sleep 60.$UNIQ"
  [[ $(wc -l <jl) -eq 1 ]] # the header: no job ended
}
