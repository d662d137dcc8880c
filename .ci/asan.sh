#!/usr/bin/env bash
# Rebuild the C driver with AddressSanitizer + UBSan in a temporary tree and run the driver
# and cause-decoder tests against it; any sanitizer report fails the run.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# A private copy of the package, so the in-tree (unsanitized) extension is left alone.
cp -r "$root/pyapi/telecard" "$tmp/telecard"
rm -f "$tmp"/telecard/_cdriver*.so
TELECARD_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g -O1" \
TELECARD_LDFLAGS="-fsanitize=address,undefined" \
PYTHONPATH="$root/cdriver" python -c \
    "import sys, pathlib as p, build_cdriver as b; b.build_inplace(p.Path(sys.argv[1]), p.Path(sys.argv[2]))" \
    "$tmp/telecard" "$tmp/build" > /dev/null

log="$tmp/stderr"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$tmp:$root"
cd "$root"
python -c "import telecard._cdriver as m, sys; sys.exit(not m.__file__.startswith('$tmp'))" \
    || { echo "asan.sh: the sanitized build is not the one imported" >&2; exit 1; }
# -s: the sanitizers write to fd 2, which pytest would otherwise capture and lose on abort
status=0
python -m pytest -q -s -p no:cacheprovider tests/test_driver.py tests/test_cause_decode.py "$@" \
    2> >(tee "$log" >&2) || status=$?
wait
if grep -qE "ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer" "$log"; then
    echo "asan.sh: sanitizer report (see above)" >&2
    exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "asan.sh: tests failed under the sanitizers (status $status)" >&2
fi
exit "$status"
