"""What produced a result: the code's commit (and whether the tree had uncommitted changes), recorded in every study
JSON. Training is deterministic for a fixed code version and seed, but float-level changes (an einsum turned into a
bmm) move a run as much as a seed does, so a number is only reproducible together with its commit."""
from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_version() -> str:
    """'<commit>' or '<commit>+uncommitted changes'; 'unknown' outside a git checkout."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+uncommitted changes" if dirty.stdout.strip() else "")
