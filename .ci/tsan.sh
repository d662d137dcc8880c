#!/usr/bin/env bash
# Build benchmarks/herd.c and the C driver with ThreadSanitizer and run a short herd (a few
# thread counts, the largest past the 127 outstanding tags so that requests queue for tags,
# then commands through a tc_pool stopped with some in flight) against its forked fake card;
# any data race fails the run.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

gcc -std=c11 -Wall -Wextra -Werror -g -O1 -fsanitize=thread -pthread -I"$root/cdriver" \
    "$root/benchmarks/herd.c" "$root"/cdriver/{frame,link,device,cause,errors,pool}.c -o "$tmp/herd"
# setarch -R: TSan refuses some address-space layouts that ASLR can produce
TSAN_OPTIONS="halt_on_error=1 exitcode=66" setarch "$(uname -m)" -R \
    "$tmp/herd" -t 3000 -p 8 1 8 64 200 2> >(tee "$tmp/stderr" >&2)
wait
if grep -q "WARNING: ThreadSanitizer" "$tmp/stderr"; then
    echo "tsan.sh: ThreadSanitizer report (see above)" >&2
    exit 1
fi
