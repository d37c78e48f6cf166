#!/usr/bin/env bash
# README check (CTest: readme_examples): every ```c block of README.md must appear, line for
# line (leading blanks aside), in one of examples/*.c, which the build compiles and the tests
# run; so no example in the README can drift from code that works.
# Usage: tests/readme_examples.sh <source dir>
set -euo pipefail
src=${1:?usage: readme_examples.sh <source dir>}
python3 - "$src" <<'PY'
import glob, re, sys
src = sys.argv[1]
readme = open(f"{src}/README.md").read()
blocks = re.findall(r"```c\n(.*?)```", readme, re.S)
norm = lambda text: [l.strip() for l in text.splitlines() if l.strip()]
examples = {p: norm(open(p).read()) for p in glob.glob(f"{src}/examples/*.c")}
def found(block):
    n = len(block)
    return [p for p, lines in examples.items()
            if any(lines[i:i + n] == block for i in range(len(lines) - n + 1))]
bad = 0
for k, b in enumerate(blocks, 1):
    lines = norm(b)
    where = found(lines)
    if where:
        print(f"readme_examples: block {k} ({lines[0][:50]}...) is in {where[0].split('/')[-1]}")
    else:
        print(f"readme_examples: FAIL: block {k} ({lines[0][:50]}...) is in no examples/*.c",
              file=sys.stderr)
        bad += 1
if not blocks:
    print("readme_examples: FAIL: no C block in README.md", file=sys.stderr)
    bad = 1
sys.exit(1 if bad else 0)
PY
