#!/bin/sh
# The test wrapper (tests/helpers/run_in_group.sh) leaves nothing running: neither after a
# test that timed out nor after one that left a process behind.
set -u
here=$(dirname "$0")
wrap="$here/helpers/run_in_group.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
gone() { # pid: true once it is no longer running (a zombie counts as gone)
    i=0
    while [ $i -lt 50 ]; do
        [ -r "/proc/$1/stat" ] || return 0
        # The state is the field after the command's ")": Z for a zombie.
        st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
        case $st in Z*) return 0 ;; esac
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# A hung test with a child of its own: killed at the timeout, the child too.
"$wrap" 1 sh -c 'sleep 300 & echo $! > "$1/child"; sleep 300' sh "$tmp"
rc=$?
[ "$rc" -eq 124 ] || fail "a hung test: exit status $rc, expected 124"
child=$(cat "$tmp/child")
gone "$child" || fail "the hung test's child $child still runs"

# A test that passes but leaves a process behind: that process is killed.
"$wrap" 30 sh -c 'sleep 300 & echo $! > "$1/left"; exit 0' sh "$tmp"
rc=$?
[ "$rc" -eq 0 ] || fail "a passing test: exit status $rc"
left=$(cat "$tmp/left")
gone "$left" || fail "the process left by the test ($left) still runs"

# The test's own status comes through.
"$wrap" 30 sh -c 'exit 3'
rc=$?
[ "$rc" -eq 3 ] || fail "exit status $rc, expected 3"
echo "ok"
