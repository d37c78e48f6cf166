#!/usr/bin/env bash
# kill_resume.sh - concur interrupted and resumed again and again loses and repeats nothing.
#
# Usage: tests/stress/kill_resume.sh CONCUR [ROUNDS [JOBS [SEED]]]
#   CONCUR  the concur binary
#   ROUNDS  interruptions (default 20), JOBS jobs in the run (default 200), SEED for $RANDOM
#
# In a fresh directory, runs `concur --joblog jl --resume` over JOBS tiny jobs (each sleeps
# 0-90 ms, then prints one line) ROUNDS times, each time interrupted after a random
# 20-150 ms by a random SIGKILL, SIGINT or SIGTERM (-k on every other round, so that held
# output is interrupted too); then once more to the end. All runs append to one output
# file. Checks that every job's line is in it exactly once: a job is in the joblog only
# once its output was written, so a kill never loses output the joblog claims, and a job
# whose output was written is never run again.
#
# Prints one summary line; exits 0 when nothing was lost or duplicated, 1 otherwise.
# Many seeds: for s in $(seq 50); do tests/stress/kill_resume.sh build/release/cli/concur 20 200 $s || break; done
set -u
concur=${1:?usage: kill_resume.sh CONCUR [ROUNDS [JOBS [SEED]]]}
rounds=${2:-20}
jobs=${3:-200}
RANDOM=${4:-$$}
[[ $concur == /* ]] || concur=$PWD/$concur

dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1

# A non-interactive shell may start commands with SIGINT ignored: restore its default.
default_int=(env --default-signal=INT)
"${default_int[@]}" true 2>/dev/null || default_int=()

job='sleep 0.0$(({} % 10)); echo job-{}'
signals=(KILL INT TERM)
kills=()
# timeout(1) sends the signal: it waits for concur, so the signal never reaches a process
# that took over the pid of a concur that had already ended.
for ((r = 0; r < rounds; r++)); do
  keep=()
  ((r % 2)) && keep=(-k)
  sig=${signals[RANDOM % 3]}
  after="0.$(printf '%03d' $((20 + RANDOM % 130)))"
  timeout --foreground -s "$sig" "$after" "${default_int[@]}" "$concur" -j8 "${keep[@]}" --joblog jl \
    --resume "$job" ::: $(seq "$jobs") >>out 2>>err </dev/null
  st=$?
  [[ $st -eq 124 || $st -gt 128 ]] && kills+=("$sig")
done
"$concur" -j8 --joblog jl --resume "$job" ::: $(seq "$jobs") >>out 2>>err </dev/null
rc=$?

want=$(seq "$jobs" | sed 's/^/job-/' | LC_ALL=C sort)
got=$(LC_ALL=C sort out)
lost=$(LC_ALL=C comm -23 <(echo "$want") <(echo "$got" | uniq) | wc -l)
dups=$(echo "$got" | uniq -d | wc -l)
extra=$(LC_ALL=C comm -13 <(echo "$want") <(echo "$got" | uniq) | wc -l)
echo "kill_resume: $rounds rounds (${#kills[@]} signalled: ${kills[*]:-none}), $jobs jobs:" \
  "$lost lost, $dups duplicated, $extra unexpected lines, last run exit $rc"
if [[ $lost -ne 0 || $dups -ne 0 || $extra -ne 0 || $rc -ne 0 ]]; then
  echo "duplicated: $(echo "$got" | uniq -d | head -20 | paste -sd' ')"
  echo "lost: $(LC_ALL=C comm -23 <(echo "$want") <(echo "$got" | uniq) | head -20 | paste -sd' ')"
  exit 1
fi
