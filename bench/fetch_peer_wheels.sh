#!/usr/bin/env bash
# Download the peer kernels bench_scan.py compares against (flash-linear-attention's simple_gla: the fla-core wheel
# and its one requirement, einops) into <repo>/.whl/, for an offline GPU machine where gpu_check.sh installs them.
# Pure-Python wheels (~1.2 MB together); the full `flash-linear-attention` package would also pull transformers.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FLA_VERSION="${FLA_VERSION:-0.6.0}"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    -d "$ROOT/.whl" "fla-core==$FLA_VERSION" einops
ls -l "$ROOT/.whl"
