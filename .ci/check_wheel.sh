#!/usr/bin/env bash
# Packaging check (issue 13): what a user of `pip install` gets, not what the Makefile's editable install gets.
#   1. build the sdist from the checkout, 2. build the wheel FROM THE UNPACKED SDIST (so a file missing from the
#   sdist fails here), both with build isolation (pyproject.toml's [build-system] requires), 3. install the wheel
#   into a fresh venv with its declared dependencies only (torch pinned to TORCH_SPEC first, the same build the
#   Makefile uses, so no CUDA torch is downloaded), 4. from a folder outside the checkout: import the package,
#   check it is the installed copy, run `t2arec demo --users 300 --epochs 1`.
# Usage: .ci/check_wheel.sh   (or `make wheel-check`). PYTHON must have the `build` module (the dev extra has it).
# Temporary files go to one folder under $TMPDIR, removed on exit, pass or fail (KEEP=1 keeps it for a post-mortem).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/t2arec-wheel-check.XXXXXX")
STEP="start"
START=$SECONDS

finish() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "wheel check: FAILED at step '$STEP' (exit $rc)" >&2
    else
        echo "wheel check: passed in $((SECONDS - START)) s"
    fi
    if [ "${KEEP:-0}" = 1 ]; then echo "wheel check: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap finish EXIT

step() { STEP=$1; echo "== wheel check: $1 ($((SECONDS - START)) s)"; }

step "build the sdist from a clean copy of the checkout"
# A copy of what a fresh clone has (plus uncommitted and new files): the checkout's own t2arec_fast.egg-info (left by
# the editable install) lists every file ever packaged, and setuptools would add them all to the sdist, hiding a
# file that MANIFEST.in misses.
TREE="$WORK/tree"
mkdir "$TREE"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) | tar -xf - -C "$TREE"
"$PYTHON" -m build --sdist --outdir "$WORK/dist" "$TREE" > "$WORK/sdist.log" 2>&1 || { tail -30 "$WORK/sdist.log" >&2; exit 1; }
SDIST=$(ls "$WORK"/dist/*.tar.gz)
tar -xzf "$SDIST" -C "$WORK"
SRC=$(ls -d "$WORK"/t2arec_fast-*/)

step "build the wheel from the unpacked sdist"
"$PYTHON" -m build --wheel --outdir "$WORK/dist" "$SRC" > "$WORK/wheel.log" 2>&1 || { tail -30 "$WORK/wheel.log" >&2; exit 1; }
WHEEL=$(ls "$WORK"/dist/*.whl)
echo "   $(basename "$SDIST") ($(du -k "$SDIST" | cut -f1) KiB), $(basename "$WHEEL") ($(du -k "$WHEEL" | cut -f1) KiB)"

step "install the wheel into a fresh venv ($TORCH_SPEC)"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$TORCH_SPEC"
"$WORK/venv/bin/python" -m pip install -q "$WHEEL"
"$WORK/venv/bin/python" -m pip check

step "import and run the demo from outside the checkout"
mkdir "$WORK/run"
cd "$WORK/run"
"$WORK/venv/bin/python" - "$WORK/venv" <<'PY'
import sys
from pathlib import Path
import t2arec_fast
from t2arec_fast import _state_cache  # the C++ extension was built into the wheel
where = Path(t2arec_fast.__file__).resolve()
assert where.is_relative_to(Path(sys.argv[1]).resolve()), f"imported {where}, not the installed wheel"
print(f"   t2arec_fast {t2arec_fast.__version__} from {where.parent}")
PY
"$WORK/venv/bin/python" -c "import t2arec_fast"
"$WORK/venv/bin/t2arec" demo --users 300 --epochs 1 --out "$WORK/run/demo" > "$WORK/demo.log" 2>&1 \
    || { tail -30 "$WORK/demo.log" >&2; exit 1; }
grep -q "== online serving" "$WORK/demo.log" || { tail -30 "$WORK/demo.log" >&2; echo "demo did not reach serving" >&2; exit 1; }
grep "== online serving" "$WORK/demo.log"
STEP="done"
