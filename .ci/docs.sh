#!/usr/bin/env bash
# Docs: install telecard with its docs extra, build the Sphinx site with warnings as errors,
# then run the examples in it (the doctest builder) against the simulated card. Fails on any
# warning or failing example. Output goes to a new temporary directory, or to $DOCS_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet '.[docs]'
out="${DOCS_OUT:-$(mktemp -d -t telecard-docs.XXXXXX)}"
# One doctree directory: the doctest run reuses what the HTML run read.
python -m sphinx -W --keep-going -b html -d "$out/doctrees" docs "$out/html"
python -m sphinx -W --keep-going -b doctest -d "$out/doctrees" docs "$out/doctest"
echo "docs: $out/html/index.html"
