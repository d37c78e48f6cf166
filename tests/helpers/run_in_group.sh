#!/bin/sh
# run_in_group.sh SECONDS COMMAND [ARG...]
#
# Runs one test in a session (and process group) of its own. Past SECONDS the whole group
# gets SIGTERM, then SIGKILL 5 s later, and the exit status is 124 (coreutils timeout's).
# When the test ends, on time or not, every process still in its group is killed, so a hung
# or leaking test leaves nothing running. Processes that made a session of their own (a
# daemon) are the test's to reap.
#
# CTest runs every test through this script, with its TIMEOUT a little above SECONDS.
set -u
if [ $# -lt 2 ]; then
    echo "usage: run_in_group.sh SECONDS COMMAND [ARG...]" >&2
    exit 2
fi
secs=$1
shift
# A background job of a non-interactive shell is no group leader, so setsid makes the
# session without forking: $! is the session's and the group's id.
setsid timeout -k 5 "$secs" "$@" &
pid=$!
trap 'kill -TERM "-$pid" 2>/dev/null' INT TERM HUP
wait "$pid"
rc=$?
kill -KILL "-$pid" 2>/dev/null
exit "$rc"
