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
(
    cd "$root/cdriver"
    TELECARD_CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all -g -O1" \
    TELECARD_LDFLAGS="-fsanitize=address,undefined" \
    python - "$tmp" <<'PY'
import shutil
import sys
from pathlib import Path

import build_cdriver

out = Path(build_cdriver.ffibuilder.compile(tmpdir=sys.argv[1] + "/build", verbose=False))
shutil.copy2(out, Path(sys.argv[1]) / "telecard" / out.name)
PY
)

log="$tmp/sanitizer"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$log"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$log"
export PYTHONPATH="$tmp:$root"
cd "$root"
status=0
python -c "import telecard._cdriver as m, sys; sys.exit(not m.__file__.startswith('$tmp'))" \
    || { echo "asan.sh: the sanitized build is not the one imported" >&2; exit 1; }
python -m pytest -q -p no:cacheprovider tests/test_driver.py tests/test_cause_decode.py "$@" \
    || status=$?
if compgen -G "$log.*" > /dev/null; then
    cat "$log".* >&2
    echo "asan.sh: sanitizer reports above" >&2
    exit 1
fi
exit "$status"
