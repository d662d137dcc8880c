#!/usr/bin/env bash
# Distributions (issue 11): build the sdist and the wheel, check what each carries, install the
# wheel on every CPython 3.11, 3.12 and 3.13 found and run it there, then run the sdist's own
# tests against the installed wheel, not this checkout. Fails on any failure.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
started=$SECONDS
fail() { echo "dist.sh: $*" >&2; exit 1; }
step() { echo "dist.sh: [$((SECONDS - started)) s] $*"; }

step "building the sdist and the wheel"
python -m pip install --quiet build
python -m build --outdir "$tmp/dist" "$root" > "$tmp/build.log" 2>&1 \
    || { cat "$tmp/build.log" >&2; fail "python -m build failed"; }
wheels=("$tmp"/dist/*.whl)
sdists=("$tmp"/dist/*.tar.gz)
[[ ${#wheels[@]} -eq 1 && ${#sdists[@]} -eq 1 ]] || fail "expected one wheel and one sdist"
wheel="${wheels[0]}"
sdist="${sdists[0]}"
echo "dist.sh: built $(basename "$sdist") and $(basename "$wheel")"

# One abi3 wheel serves every CPython from 3.11 on; a cp311-cp311 one would install on 3.11 only.
[[ "$(basename "$wheel")" == *-cp311-abi3-* ]] || fail "$(basename "$wheel") is not tagged cp311-abi3"
version="$(basename "$wheel" | cut -d- -f2)"

# Every tracked file but the CI's and git's own (dot files) belongs in the sdist: its tests need
# their helpers, peers and the C sources, and its readers the docs and LICENSE.
top="$(basename "$sdist" .tar.gz)"
tar -tzf "$sdist" | sed -n "s|^$top/||p" | sort > "$tmp/sdist.files"
required=(LICENSE CHANGELOG.md README.md docs/datasheet.md tests/conftest.py)
for peer in "$root"/tests/peers/*.c; do required+=("tests/peers/$(basename "$peer")"); done
if git -C "$root" rev-parse --git-dir > /dev/null 2>&1; then
    mapfile -t -O "${#required[@]}" required < <(git -C "$root" ls-files | grep -v '^\.')
fi
missing=0
for file in "${required[@]}"; do
    grep -qxF "$file" "$tmp/sdist.files" || { echo "dist.sh: the sdist lacks $file" >&2; missing=1; }
done
[[ $missing -eq 0 ]] || fail "the sdist is incomplete"
echo "dist.sh: the sdist holds LICENSE, the docs, the tests with their helpers and peers, and every tracked file"

# Each interpreter in a venv of its own, run from an empty directory so that nothing of the
# checkout is importable: what runs is the installed wheel.
ran=()
absent=()
test_venv=""
for minor in 3.11 3.12 3.13; do
    python=""
    for candidate in "$pyenv_root"/versions/"$minor".*/bin/python"$minor" \
        "$(command -v "python$minor" || true)"; do
        # A pyenv shim is on PATH for every version pyenv knows but runs only the active ones.
        if [[ -x "$candidate" ]] && "$candidate" -c \
            "import sys; sys.exit(f'{sys.version_info[0]}.{sys.version_info[1]}' != '$minor')" \
            > /dev/null 2>&1; then
            python="$candidate"
            break
        fi
    done
    if [[ -z "$python" ]]; then
        echo "dist.sh: SKIPPED Python $minor: no python$minor under $pyenv_root/versions or on PATH"
        absent+=("$minor")
        continue
    fi
    full="$("$python" -c 'import platform; print(platform.python_version())')"
    step "Python $full ($python): installing the wheel in a fresh venv"
    venv="$tmp/venv-$minor"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet "$wheel"
    run="$tmp/run-$minor"
    mkdir "$run"
    (
        cd "$run"
        "$venv/bin/telecard" --help > /dev/null
        "$venv/bin/python" -m telecard --help > /dev/null
        shown="$("$venv/bin/telecard" --version)"
        [[ "$shown" == "telecard $version" ]] || fail "telecard --version said '$shown' on $full"
        echo "dist.sh:   telecard --version: $shown"
        got="$("$venv/bin/python" -c '
import sys, telecard, telecard._cdriver
assert telecard.__file__.startswith(sys.prefix), telecard.__file__
assert telecard._cdriver.__file__.endswith(".abi3.so"), telecard._cdriver.__file__
print(telecard.__version__)')"
        [[ "$got" == "$version" ]] || fail "telecard.__version__ is $got on $full, not $version"
        echo "dist.sh:   telecard.__version__: $got"
        # A real call on the embedded simulated card: 3302 answers in the demo plan.
        "$venv/bin/telecard" call 3302 --hold 0.1 > call.out 2>&1 \
            && grep -q '^cause: *NORMAL$' call.out \
            || { cat call.out >&2; fail "telecard call 3302 on $full"; }
        echo "dist.sh:   telecard call 3302: answered, $(grep '^cause:' call.out | tr -s ' ')"
    )
    ran+=("$full")
    [[ -n "$test_venv" ]] || test_venv="$venv"
done
[[ ${#ran[@]} -gt 0 ]] || fail "no Python 3.11, 3.12 or 3.13 found"
summary="the wheel ran on Python ${ran[*]}${absent:+; skipped as absent: ${absent[*]}}"
echo "dist.sh: $summary"

# The sdist's tests against the installed wheel (the first interpreter found, 3.11 when there):
# the unpacked tree has pyapi/telecard, not telecard/, so only the venv's telecard is importable.
step "running the sdist's tests with $("$test_venv/bin/python" -V) and the installed wheel"
"$test_venv/bin/python" -m pip install --quiet "$wheel[test]"
tar -xzf "$sdist" -C "$tmp"
(
    cd "$tmp/$top"
    "$test_venv/bin/python" -c 'import sys, telecard; sys.exit(not telecard.__file__.startswith(sys.prefix))' \
        || fail "the sdist's tests would not import the installed telecard"
    "$test_venv/bin/python" -m pytest -q -x
)

step "done: $summary; the sdist's tests passed against it"
