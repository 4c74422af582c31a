#!/usr/bin/env bash
# Before/after on one machine in one session: runs bench/mirror_bench.py and bench/push_bench.py
# of a base revision and of the working tree, interleaved (base, tree, base, tree, ...), so that
# a redesign can show it did not slow anything down. Results: bench/results/compare/.
#
#   bench/compare_revisions.sh BASE_REV [ROUNDS]      (e.g. bench/compare_revisions.sh f59879d 2)
#
# MIRROR_ARGS and PUSH_ARGS pass options to the two benchmarks (smaller datasets for a quick look).
#
# The base revision runs from a temporary git worktree with this checkout's .venv interpreter;
# its benchmarks start the daemon as <worktree>/.venv/bin/syncd, which is made a wrapper that
# puts the worktree first on the import path.
set -euo pipefail
cd "$(dirname "$0")/.."
base_rev=${1:?usage: bench/compare_revisions.sh BASE_REV [ROUNDS]}
rounds=${2:-2}
python=$PWD/.venv/bin/python
out=$PWD/bench/results/compare
base=$(mktemp -d /tmp/syncd-base.XXXXXX)
trap 'git worktree remove --force "$base" >/dev/null 2>&1 || rm -rf "$base"' EXIT
git worktree add --detach --force "$base" "$base_rev" >/dev/null
mkdir -p "$base/.venv/bin" "$out"
cat > "$base/.venv/bin/syncd" <<WRAPPER
#!/bin/sh
exec "$python" -c "import runpy, sys; sys.path.insert(0, '$base'); sys.argv[0] = 'syncd'; runpy.run_module('syncd', run_name='__main__', alter_sys=True)" "\$@"
WRAPPER
chmod +x "$base/.venv/bin/syncd"
for round in $(seq 1 "$rounds"); do
    for bench in mirror push; do
        for side in base tree; do
            root=$base; [ "$side" = tree ] && root=$PWD
            echo "round $round: $bench, $side" >&2
            args=${MIRROR_ARGS:-}; [ "$bench" = push ] && args=${PUSH_ARGS:-}
            # shellcheck disable=SC2086 # the options are words
            (cd "$root" && "$python" "bench/${bench}_bench.py" $args \
                --out "$out/$bench-$side-$round.json" > "$out/$bench-$side-$round.txt" 2>&1)
        done
    done
done
echo "tables and JSON in $out" >&2
