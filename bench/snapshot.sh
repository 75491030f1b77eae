#!/usr/bin/env bash
# Benchmark a fixed commit while the work tree keeps changing: export it (read-only for the repo: git archive)
# to a directory, add this bench/ folder and the devtools/ it starts processes with, and print the directory. Then run the benchmarks from there with
# the project's venv, e.g.
#
#   dir=$(bench/snapshot.sh HEAD) && cd "$dir" && /work/main/.venv/bin/python -m bench.onsale
#
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rev=${1:-HEAD}
sha=$(git rev-parse --short "$rev")
dir=${2:-/tmp/bench-src-$sha}
rm -rf "$dir"
mkdir -p "$dir"
git archive "$rev" | tar -x -C "$dir"
rm -rf "$dir/bench" "$dir/devtools"
cp -r bench "$dir/bench"
cp -r devtools "$dir/devtools"
rm -rf "$dir/bench/__pycache__" "$dir/devtools/__pycache__"
echo "$dir"
