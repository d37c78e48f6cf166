#!/usr/bin/env bats
# Output modes: grouped (default), --line-buffer, -u, -k, --tag, --tagstring, --results,
# --json. The ordering checks rely on job workloads spaced 0.1-0.3 s apart; CTest runs this
# file alone (RUN_SERIAL).

load helpers

# Job "0" prints 0-1 at 0.0 s and 0-2 at 0.3 s; job "0.1" prints at 0.1 s and 0.4 s.
TWO_LINES='sleep {}; echo {}-1; sleep 0.3; echo {}-2'

@test "output is grouped by default: each job's lines stay together" {
  run "$CONCUR" -j2 "$TWO_LINES" ::: 0 0.1
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$output" | paste -sd' ')" = "0-1 0-2 0.1-1 0.1-2" ]
}

@test "grouped output keeps a job's stdout and stderr apart from other jobs" {
  "$CONCUR" -j2 'sleep {}; echo {}-out; echo {}-err >&2; sleep 0.3; echo {}-out2' ::: 0 0.1 \
    >out 2>err
  [ "$(paste -sd' ' out)" = "0-out 0-out2 0.1-out 0.1-out2" ]
  [ "$(paste -sd' ' err)" = "0-err 0.1-err" ]
}

@test "--line-buffer prints lines as they come" {
  run "$CONCUR" -j2 --line-buffer "$TWO_LINES" ::: 0 0.1
  [ "$status" -eq 0 ]
  [ "$(printf '%s\n' "$output" | paste -sd' ')" = "0-1 0.1-1 0-2 0.1-2" ]
}

@test "--line-buffer never splits a line" {
  "$CONCUR" -j2 --line-buffer 'sleep {}; printf "x{}"; sleep 0.3; printf "y{}\n"' ::: 0 0.1 >out
  [ "$(paste -sd' ' out)" = "x0y0 x0.1y0.1" ]
}

@test "-u prints output at once, even partial lines" {
  "$CONCUR" -j2 -u 'case {} in a) printf a; sleep 0.4; printf "b\n";; c) sleep 0.2; printf "c\n";; esac' \
    ::: a c >out
  [ "$(cat out)" = "$(printf 'ac\nb')" ]
}

@test "-k prints in input order despite reverse durations" {
  same_as_parallel -k -j3 'sleep {}; echo {}' ::: 0.3 0.2 0.1
}

@test "without -k output comes in completion order" {
  run "$CONCUR" -j3 'sleep {}; echo {}' ::: 0.3 0.2 0.1
  [ "$(printf '%s\n' "$output" | paste -sd' ')" = "0.1 0.2 0.3" ]
}

@test "--tag prefixes each line with the argument and a tab" {
  same_as_parallel -k --tag 'echo {}; echo second' ::: a 'b c'
}

@test "--tagstring prefixes each line with the expanded string" {
  same_as_parallel -k --tagstring 'X{}-{#}' echo hi ::: a b
}

# print_fields FILE FIELD...: the named fields of each record of a CSV (.csv) or JSON
# (.json: one object per line, or an array) results file, one record per line.
print_fields() {
  python3 - "$@" <<'PY'
import csv, json, sys
path, fields = sys.argv[1], sys.argv[2:]
if path.endswith(".csv"):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
else:
    text = open(path).read().strip()
    try:
        rows = json.loads(text)
        rows = rows if isinstance(rows, list) else [rows]
    except ValueError:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
missing = [k for k in fields if rows and k not in rows[0]]
if missing:
    sys.exit("%s: no field %s in %r" % (path, missing, rows[0]))
for r in sorted(rows, key=lambda r: int(r["Seq"])):
    print(json.dumps([str(r[k]) if not isinstance(r[k], list) else r[k] for k in fields]))
PY
}

@test "--results out.csv writes one CSV row per job, as GNU parallel" {
  need_parallel
  "$CONCUR" --results c.csv 'echo {}; echo err >&2; exit {}' ::: 0 3 || true
  parallel --will-cite --results p.csv 'echo {}; echo err >&2; exit {}' ::: 0 3 || true
  f=(Seq Exitval Signal Command V1 Stdout Stderr)
  diff <(print_fields c.csv "${f[@]}") <(print_fields p.csv "${f[@]}")
}

@test "--results out.json writes one JSON record per job, as GNU parallel" {
  need_parallel
  "$CONCUR" --results c.json 'echo {}; echo err >&2; exit {}' ::: 0 3 || true
  parallel --will-cite --results p.json 'echo {}; echo err >&2; exit {}' ::: 0 3 || true
  f=(Seq Exitval Signal Command V Stdout Stderr)
  diff <(print_fields c.json "${f[@]}") <(print_fields p.json "${f[@]}")
}

@test "--results DIR writes each job's output in a tree, as GNU parallel" {
  need_parallel
  "$CONCUR" --results cdir 'echo {1}{2}; echo err{1} >&2' ::: a 'b c' ::: 1 2
  parallel --will-cite --results pdir 'echo {1}{2}; echo err{1} >&2' ::: a 'b c' ::: 1 2
  diff <(cd cdir && find . | sort) <(cd pdir && find . | sort)
  diff -r cdir pdir
}

# GNU parallel 20221122 prints no job output when --results is given.
@test "--results prints what GNU parallel prints" {
  same_as_parallel -k --results r.csv echo ::: a b
}

# json_check EXPR: python expression over `jobs` (the --json records of file "out", in
# seq order) that must be true.
json_check() {
  python3 - "$1" <<'PY'
import json, sys
text = open("out").read().strip()
try:
    jobs = json.loads(text)
    jobs = jobs if isinstance(jobs, list) else [jobs]
except ValueError:
    jobs = [json.loads(line) for line in text.splitlines() if line.strip()]
jobs.sort(key=lambda j: j["seq"])
if not eval("(" + sys.argv[1] + ")"):
    sys.exit("failed: %s\nrecords: %s" % (sys.argv[1], json.dumps(jobs, indent=1)))
PY
}

@test "--json prints one record per job with every field" {
  "$CONCUR" --json -k 'echo {}' ::: a b c >out
  json_check 'len(jobs) == 3 and all(set(j) >= {"seq","args","command","exitcode","signal","timeout","start","runtime","stdout","stderr"} for j in jobs)'
}

@test "--json records seq, args, command, stdout, stderr and exitcode" {
  "$CONCUR" --json 'echo out {}; echo err >&2; exit 3' ::: 'x y' >out || true
  json_check 'jobs[0]["seq"] == 1 and jobs[0]["args"] == ["x y"]
    and "echo out" in jobs[0]["command"] and jobs[0]["stdout"] == "out x y\n"
    and jobs[0]["stderr"] == "err\n" and jobs[0]["exitcode"] == 3
    and jobs[0]["signal"] == 0 and jobs[0]["timeout"] is False'
}

@test "--json records start and runtime" {
  t0=$(date +%s)
  "$CONCUR" --json 'sleep 0.3; : {}' ::: x >out
  json_check "abs(jobs[0]['start'] - $t0) < 5 and 0.3 <= jobs[0]['runtime'] < 3"
}

@test "--json marks a job killed by --timeout" {
  "$CONCUR" --json --timeout 0.3 'sleep {}' ::: 100.$UNIQ >out || true
  json_check 'jobs[0]["timeout"] is True and jobs[0]["exitcode"] != 0'
}

@test "--json records the signal that killed a job" {
  "$CONCUR" --json 'kill -9 $$; : {}' ::: x >out || true
  json_check 'jobs[0]["signal"] == 9'
}

@test "--json output is valid JSON with binary and control characters" {
  "$CONCUR" --json 'printf "q\"\\\\ \t\001\377\n"; : {}' ::: x >out
  json_check 'jobs[0]["stdout"].startswith("q\"\\ \t\x01")'
}
