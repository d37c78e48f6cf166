#!/usr/bin/env bats
# --bar, --eta, --progress, --dry-run, --report, --help, --version and the man page.

load helpers

# progress_to_stderr OPTION: with OPTION, stdout is exactly the jobs' output and the
# progress information went to stderr.
progress_to_stderr() {
  "$CONCUR" -k "$1" echo ::: a b c >out 2>err
  [ "$(cat out)" = "$(printf 'a\nb\nc')" ]
  [ -s err ]
}

@test "--bar writes to stderr only" {
  progress_to_stderr --bar
}

@test "--eta writes to stderr only" {
  progress_to_stderr --eta
}

@test "--progress writes to stderr only" {
  progress_to_stderr --progress
}

@test "--dry-run runs nothing" {
  run "$CONCUR" --dry-run 'touch {}' ::: f1 f2
  [ "$status" -eq 0 ]
  [ ! -e f1 ] && [ ! -e f2 ]
}

@test "--dry-run prints each command" {
  run "$CONCUR" -k --dry-run 'touch {}' ::: f1 f2
  [ "$output" = "$(printf 'touch f1\ntouch f2')" ]
}

@test "--dry-run prints the commands quoted as they would run" {
  args=('a  b' "it's" '$HOME' '*' ';x')
  "$CONCUR" -k --dry-run 'printf "<%s>\n"' ::: "${args[@]}" >cmds
  sh cmds >from_dry_run
  "$CONCUR" -k 'printf "<%s>\n"' ::: "${args[@]}" >real
  cmp from_dry_run real
  [ "$(wc -l <real)" -eq 5 ]
}

@test "--dry-run prints the same commands as GNU parallel" {
  same_as_parallel -k --dry-run echo ::: a b ::: 1 2
}

@test "--report prints the run summary and one record per job" {
  run "$CONCUR" -k --report 'echo {}' ::: a b
  [ "$status" -eq 0 ]
  [[ $output == *"Test start time : "* ]]
  [[ $output == *"Total run time : "* ]]
  rule=$(printf '=%.0s' $(seq 40))
  [ "$(printf '%s\n' "$output" | grep -cx -- "$rule")" -eq 2 ]
}

# mentions TEXT OPTION: TEXT names OPTION as a whole word ("-j," and "--halt=WHEN" count).
mentions() {
  tr -c -- '-[:alnum:]:+\n' '\n' <<<"$1" | grep -qxF -- "$2"
}

@test "--help lists every option" {
  run "$CONCUR" --help
  [ "$status" -eq 0 ]
  missing=()
  for opt in "${CONCUR_OPTIONS[@]}" ::: ':::+' '::::'; do
    mentions "$output" "$opt" || missing+=("$opt")
  done
  [ "${#missing[@]}" -eq 0 ] || { echo "not in --help: ${missing[*]}"; false; }
}

@test "--help goes to stdout" {
  "$CONCUR" --help >out 2>err
  [ -s out ] && [ ! -s err ]
}

@test "--version prints the project version" {
  h=$CLI_SOURCE_DIR/include/concur/version.h
  want=$(for p in MAJOR MINOR PATCH; do sed -n "s/^#define CONCUR_VERSION_$p \([0-9]*\)$/\1/p" "$h"; done | paste -sd.)
  [ -n "$want" ]
  run "$CONCUR" --version
  [ "$status" -eq 0 ]
  [[ $output == *concur* ]]
  [[ $output == *"$want"* ]]
}

@test "the man page renders without warnings" {
  page=$CLI_SOURCE_DIR/docs/concur.1
  [ -f "$page" ] || { echo "missing $page"; false; }
  if command -v groff >/dev/null; then
    run groff -man -Tascii -ww -z "$page"
  elif command -v man >/dev/null; then
    run env MANWIDTH=80 man --warnings -E ascii -l "$page"
  else
    skip "neither groff nor man is installed"
  fi
  [ "$status" -eq 0 ]
  [ -z "$output" ] || { echo "warnings: $output"; false; }
}

@test "the man page documents every option" {
  page=$CLI_SOURCE_DIR/docs/concur.1
  [ -f "$page" ] || { echo "missing $page"; false; }
  command -v groff >/dev/null || skip "groff is not installed"
  text=$(groff -man -Tascii "$page" 2>/dev/null | col -b)
  missing=()
  for opt in "${CONCUR_OPTIONS[@]}" ::: ':::+' '::::'; do
    mentions "$text" "$opt" || missing+=("$opt")
  done
  [ "${#missing[@]}" -eq 0 ] || { echo "not in the man page: ${missing[*]}"; false; }
}
