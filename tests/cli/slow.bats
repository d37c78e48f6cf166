#!/usr/bin/env bats
# SLOW: many jobs. Registered in CTest with the label "slow" and a longer timeout.

load helpers

# Slower than the other files' tests: 100000 jobs.
BATS_TEST_TIMEOUT=800

# max_rss_kb COMMAND...: run COMMAND (stdin from file "in") and print the peak resident
# memory in kB of the largest process it waited for (concur itself: its jobs are tiny).
max_rss_kb() {
  python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:], stdin=open("in"), stdout=subprocess.DEVNULL)
if rc:
    sys.exit("exit status %d" % rc)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@"
}

@test "SLOW: seq 100000 | concur -j2 true completes in bounded memory" {
  seq 1000 >in
  small=$(max_rss_kb "$CONCUR" -j2 true)
  seq 100000 >in
  big=$(max_rss_kb "$CONCUR" -j2 true)
  echo "peak RSS: $small kB for 1000 jobs, $big kB for 100000 jobs"
  # AddressSanitizer keeps freed memory in quarantine (up to 256 MB): RSS grows regardless.
  [ -z "${CONCUR_SANITIZE:-}" ] || skip "peak RSS is not meaningful under ${CONCUR_SANITIZE} sanitizer"
  # Streaming the input and the results keeps memory flat; 10 MB leaves room for
  # allocator noise but not for a record kept per job.
  [ "$big" -lt $((small + 10240)) ]
}
