#!/usr/bin/env bash
# Runs GNU parallel's own test cases against concur.
#
# Usage: scripts/gnu_suite.sh SUITE_DIR [CONCUR_BINARY]
#
# SUITE_DIR holds a copy of GNU parallel's testsuite: tests-to-run/*.sh and, if there is one,
# wanted-results/<file name without .sh>. GNU parallel's suite is GPL: keep it outside this
# repository. CONCUR_BINARY defaults to build/release/cli/concur.
#
# Each tests-to-run file defines shell functions par_NAME (a "case") and ends with a pipeline
# that runs them through parallel with --tag, merges stderr into stdout ('{} 2>&1'), and
# rewrites /usr/bin to /bin; wanted-results/FILE holds that output, each line "par_NAME<TAB>...".
# This script does the same for one case at a time (without the tag), in a directory of its own
# (/tmp/gnu-suite.$UID/CASE, also its $HOME and $TMPDIR), under `timeout -k 2 $GNU_SUITE_TIMEOUT`,
# with a `parallel` on PATH that is concur (a symbolic link named parallel, as a drop-in install
# has it: concur then names itself parallel in its messages), and compares the output with the
# reference:
#   - the case's lines in wanted-results/FILE when that file exists, else
#   - what GNU parallel itself ($GNU_PARALLEL, default /usr/bin/parallel) prints for the case.
# GNU parallel runs every counted case twice (its output is kept in SUITE_DIR/reference/ and
# reused by later runs: delete that directory after changing GNU_PARALLEL or the suite). A case
# is UNSTABLE when those two runs differ, or differ from wanted-results: GNU parallel does not
# give a steady answer to it on this machine, so concur cannot be judged by it.
#
# A case counts only if every option it passes to parallel (on its command lines or in
# $PARALLEL) is one that `concur --help` lists. Counted cases that need what this script does not
# provide are skipped, with the reason: ssh, sudo, sql, a terminal (expect), GNU parallel's other
# programs (env_parallel, parset, sem, parcat, sql, niceload, parsort), or more than
# $GNU_SUITE_TIMEOUT seconds under GNU parallel itself.
#
# Output: a line per case (PASS, FAIL, UNSTABLE, SKIP reason, NOTCOUNTED options), then
#   counted N pass P fail F unstable U (X%)
# where N = P + F + U and X = P / (P + F). With GNU_SUITE_DIFF=1, the failing cases' diffs
# (reference, concur; 40 lines each) follow.
#
# Environment: GNU_PARALLEL (GNU parallel to compare with), GNU_SUITE_TIMEOUT (seconds a case,
# default 20), GNU_SUITE_JOBS (cases at once, default 2), GNU_SUITE_ONLY (an extended regex:
# run only the cases whose name matches), GNU_SUITE_DIFF (1: print the diffs), GNU_SUITE_LIST
# (1: only print each case's file, name and verdict: run, skip REASON or notcounted OPTIONS).
# Exit status: 0 when the run completed (whatever the pass rate), 2 on a usage error.
# Time: about 7 minutes on 2 cores for the first run over parallel-local-0.3s.sh and
# parallel-local-1s.sh (GNU parallel's runs dominate), under a minute once they are kept.
set -uo pipefail

usage() { echo "usage: $0 SUITE_DIR [CONCUR_BINARY]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
suite=$(cd "$1" 2>/dev/null && pwd) || usage
[[ -d $suite/tests-to-run ]] || { echo "$0: no $1/tests-to-run" >&2; exit 2; }
concur=${2:-$(dirname "$0")/../build/release/cli/concur}
[[ -x $concur ]] || { echo "$0: $concur is not an executable" >&2; exit 2; }
concur=$(cd "$(dirname "$concur")" && pwd)/$(basename "$concur")
gnu=${GNU_PARALLEL:-/usr/bin/parallel}
[[ -x $gnu ]] || { echo "$0: GNU parallel ($gnu) not found; set GNU_PARALLEL" >&2; exit 2; }
limit=${GNU_SUITE_TIMEOUT:-20}
jobs=${GNU_SUITE_JOBS:-2}
only=${GNU_SUITE_ONLY:-}

work=/tmp/gnu-suite.$UID
rm -rf "$work" && mkdir -p "$work/bin-concur" "$work/bin-gnu" "$work/bin" "$work/cases" "$work/out" ||
  exit 1

# `parallel` for each side (a symbolic link, as a drop-in install would have it: a #!/bin/sh
# wrapper would lose the cases' exported bash functions, which dash drops from the
# environment), and the helper commands the suite's author has on his PATH.
# (The helpers are in one directory for both sides: their path shows in some messages.)
ln -s "$concur" "$work/bin-concur/parallel" && ln -s "$gnu" "$work/bin-gnu/parallel" || exit 1
printf '#!/bin/bash\n"$@" 2>&1\n' >"$work/bin/stdout"
printf '#!/bin/bash\nexec perl -pe '\''BEGIN{$t=$ENV{TMPDIR}} $t ne "" and s:\\Q$t\\E:/TMP:g'\''\n' \
  >"$work/bin/replace_tmpdir"
printf '#!/bin/bash\nexec perl -ne '\''print unless $seen{$_}++'\''\n' >"$work/bin/puniq"
chmod +x "$work/bin/stdout" "$work/bin/replace_tmpdir" "$work/bin/puniq" || exit 1

# The options concur lists: "OPT[ ARG]" per line, from the option column of --help.
"$concur" --help | perl -ne '
  next unless /^\s+(-\S.*?)(?:\s{2,}|\s*$)/;
  my @names = split /,\s*/, $1;
  my $arg = ($names[-1] =~ s/\s+\S+$//) ? 1 : 0;
  print "$_ $arg\n" for @names;' >"$work/options" || exit 1

# Every case: FILE NAME VERDICT, where VERDICT is "run", "skip REASON" or "notcounted OPTIONS".
for file in "$suite"/tests-to-run/*.sh; do
  base=$(basename "$file" .sh)
  # The file without its runner (the pipeline at its end, from `export -f $(compgen`).
  sed '/^export -f \$(compgen -A function | grep par_)/,$d' "$file" >"$work/cases/$base.sh"
  bash -c 'source "$1" >/dev/null 2>&1; for f in $(compgen -A function | grep ^par_ | LC_ALL=C sort); do
             printf "\x01%s\n" "$f"; declare -f "$f"; done' _ "$work/cases/$base.sh" 2>/dev/null
done >"$work/bodies" &&
  perl -e '
    my %opt; open my $o, "<", $ARGV[0] or die; while (<$o>) { chomp; my ($n, $a) = split / /; $opt{$n} = $a }
    my $file; local $/ = "\x01"; open my $b, "<", $ARGV[1] or die; <$b>;
    # Words of a command line: quotes removed, up to an unquoted newline, | ; & ( ) < >.
    sub words { my ($s) = @_; my (@w, $cur, $q); $cur = undef;
      for (my $i = 0; $i < length $s; $i++) { my $c = substr $s, $i, 1;
        if ($q) { if ($c eq $q) { $q = undef } elsif ($c eq "\\" && $q eq "\"") { $cur .= substr $s, ++$i, 1 } else { $cur .= $c } next }
        if ($c eq "\x27" || $c eq "\"") { $q = $c; $cur .= ""; next }
        if ($c eq "\\") { $cur .= substr $s, ++$i, 1; next }
        if ($c =~ /[\n|;&()<>]/) { last }
        if ($c =~ /\s/) { push @w, $cur if defined $cur; $cur = undef; next }
        $cur .= $c }
      push @w, $cur if defined $cur; return @w }
    # The options of one command line (its words after "parallel"); unknown ones marked with !.
    sub options { my @w = @_; my @o;
      while (@w) { my $w = shift @w;
        last if $w =~ /^::::?\+?$/ || $w !~ /^-./;
        if ($w =~ /^(--[^=]+)(=.*)?$/) { my ($n, $v) = ($1, $2);
          if (!exists $opt{$n}) { push @o, "!$n"; last }
          push @o, $n; shift @w if $opt{$n} && !defined $v; next }
        my @c = split //, substr $w, 1;
        while (@c) { my $n = "-" . shift @c;
          if (!exists $opt{$n}) { push @o, "!$n"; return @o }
          push @o, $n;
          if ($opt{$n}) { shift @w unless @c; last } } }
      return @o }
    while (my $rec = <$b>) { chomp $rec; my ($name, $body) = split /\n/, $rec, 2;
      my @bad; my %seen;
      while ($body =~ /(?<![\w.\/-])parallel(?![\w.-])/g) { my $rest = substr $body, pos $body;
        for (options(words($rest))) { push @bad, substr($_, 1) if /^!/ && !$seen{$_}++ } }
      while ($body =~ /\bPARALLEL=(["\x27])(.*?)\1/g) {
        for (options(words($2))) { push @bad, substr($_, 1) if /^!/ && !$seen{$_}++ } }
      my $v;
      if (@bad) { $v = "notcounted @bad" }
      elsif ($body =~ /\bsudo\b/) { $v = "skip needs sudo" }
      elsif ($body =~ /\b(ssh|sshpass)\b/) { $v = "skip needs ssh" }
      elsif ($body =~ /(?<![\w.\/-])(env_parallel|parset|sem|parcat|sql|niceload|parsort)(?![\w-])/) {
        $v = "skip uses GNU parallel\x27s $1" }
      elsif ($body =~ /\b(mysql|psql|sqlite3?|pg)\b/) { $v = "skip needs sql" }
      elsif ($body =~ /\bexpect\b/) { $v = "skip needs a terminal (expect)" }
      else { $v = "run" }
      print "$name $v\n" }' "$work/options" "$work/bodies" >"$work/verdicts" || exit 1
# (the bodies of all the files are in one stream: name them FILE:NAME again, in file order)
for file in "$suite"/tests-to-run/*.sh; do
  base=$(basename "$file" .sh)
  bash -c 'source "$1" >/dev/null 2>&1; compgen -A function | grep ^par_ | LC_ALL=C sort' _ \
    "$work/cases/$base.sh" 2>/dev/null | sed "s|^|$base |"
done >"$work/names"
paste -d' ' <(cut -d' ' -f1 "$work/names") "$work/verdicts" >"$work/plan" || exit 1
if [[ -n $only ]]; then
  awk -v re="$only" '$2 ~ re' "$work/plan" >"$work/plan.only" && mv "$work/plan.only" "$work/plan"
fi
if [[ ${GNU_SUITE_LIST:-} == 1 ]]; then
  cat "$work/plan"
  exit 0
fi

# run_case SIDE FILE NAME OUT: the case's output (stderr merged, /usr/bin -> /bin) into OUT;
# returns 124 when it took longer than the limit.
run_case() {
  local side=$1 base=$2 name=$3 out=$4 dir="$work/run/$2.$3"
  rm -rf "$dir" && mkdir -p "$dir/home/.parallel" "$dir/tmp" || return 1
  : >"$dir/home/.parallel/will-cite"
  # timeout runs the case in a process group of its own (its pid): what the case leaves
  # behind (e.g. a writer blocked on a fifo) is killed with that group once it returns.
  (
    cd "$dir" || exit 1
    export HOME="$dir/home" TMPDIR="$dir/tmp" PATH="$work/bin-$side:$work/bin:$PATH" LC_ALL=C.UTF-8
    unset PARALLEL PARALLEL_HOME PARALLEL_ENV
    timeout -k 2 "$limit" bash -c 'source "$1" >/dev/null 2>&1; "$2" 2>&1' _ \
      "$work/cases/$base.sh" "$name" </dev/null >"$dir.raw" 2>&1 &
    t=$!
    wait "$t"
    rc=$?
    kill -KILL -- "-$t" 2>/dev/null
    exit "$rc"
  )
  local rc=$?
  perl -pe 's:/usr/bin:/bin:g' "$dir.raw" >"$out"
  rm -rf "$dir" "$dir.raw"
  [[ $rc -eq 124 || $rc -eq 137 ]] && return 124
  return 0
}

# judge FILE NAME: prints the case's line.
judge() {
  local base=$1 name=$2 ref="$suite/reference/$1" out="$work/out/$1.$2" want=
  mkdir -p "$ref" || return 1
  local i
  for i in 1 2; do
    if [[ ! -e $ref/$name.$i ]]; then
      if ! run_case gnu "$base" "$name" "$ref/$name.$i.tmp"; then
        rm -f "$ref/$name.$i.tmp"; echo "SKIP $base $name (takes more than ${limit}s under GNU parallel)"; return
      fi
      mv "$ref/$name.$i.tmp" "$ref/$name.$i"
    fi
  done
  if [[ -e $suite/wanted-results/$base ]]; then
    want="$work/out/$base.$name.wanted"
    perl -ne 'BEGIN{$n=shift} print if s/^\Q$n\E\t//' "$name" "$suite/wanted-results/$base" >"$want"
  fi
  if ! cmp -s "$ref/$name.1" "$ref/$name.2" || { [[ -n $want ]] && ! cmp -s "$ref/$name.1" "$want"; }; then
    echo "UNSTABLE $base $name"; return
  fi
  local slow=
  run_case concur "$base" "$name" "$out" || slow=" (timed out after ${limit}s)"
  if cmp -s "$ref/$name.1" "$out"; then
    echo "PASS $base $name"
  else
    echo "FAIL $base $name$slow"
    diff "$ref/$name.1" "$out" >"$work/out/$base.$name.diff"
  fi
}
export -f run_case judge
export work suite limit

while read -r base name verdict rest; do
  case $verdict in
    notcounted) echo "NOTCOUNTED $base $name ($rest)" ;;
    skip) echo "SKIP $base $name ($rest)" ;;
  esac
done <"$work/plan" >"$work/report"
awk '$3 == "run" { print $1, $2 }' "$work/plan" |
  xargs -P "$jobs" -n 2 bash -c 'judge "$1" "$2" >"$work/out/$1.$2.line"' _
cat "$work/out"/*.line >>"$work/report" 2>/dev/null
LC_ALL=C sort -k2,3 "$work/report"
perl -ne '$n{$1}++ if /^(PASS|FAIL|UNSTABLE) /;
  END { my ($p, $f, $u) = map { $n{$_} // 0 } qw(PASS FAIL UNSTABLE);
        printf "counted %d pass %d fail %d unstable %d (%.0f%%)\n", $p + $f + $u, $p, $f, $u,
          $p + $f ? 100 * $p / ($p + $f) : 0 }' "$work/report"
if [[ ${GNU_SUITE_DIFF:-} == 1 ]]; then
  for d in "$work"/out/*.diff; do
    [[ -e $d ]] || continue
    echo "--- $(basename "$d" .diff): < reference, > concur"
    head -40 "$d"
  done
fi
