"""Where ../shared is (the corpus and the W3C Feed Validator the tests use):
FEEDHUB_SHARED if set, else beside this checkout, else beside the
repository this checkout was cloned from (a throwaway clone in a temp
directory, as CI's own check makes, has nothing beside it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def _find() -> Path:
    if configured := os.environ.get("FEEDHUB_SHARED"):
        return Path(configured)
    beside = CHECKOUT.parent / "shared"
    if beside.is_dir():
        return beside
    try:
        origin = subprocess.run(["git", "-C", str(CHECKOUT), "remote", "get-url", "origin"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin and (Path(origin).parent / "shared").is_dir():
        return (Path(origin).parent / "shared").resolve()
    return beside  # not there: the tests that need it skip (or fail under CI)


SHARED = _find()
