"""The W3C Feed Validator (../shared/feedvalidator, the code behind
validator.w3.org/feed), run offline over documents the hub wrote: a check
of our output by a program that shares none of our assumptions."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import SHARED

VALIDATOR = SHARED / "feedvalidator" / "validate"
_FINDING = re.compile(r"^(?P<file>.+?): (?P<level>ERROR|WARNING|INFO) (?P<kind>\w+) "
                      r"line (?P<line>\d+), column (?P<column>\d+): (?P<message>.*)$")


@dataclass(frozen=True)
class Finding:
    path: Path
    level: str  # ERROR, WARNING
    kind: str  # the validator's class name: MissingSourceElement, DuplicateUpdated, …
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path.name}:{self.line}: {self.level} {self.kind}: {self.message}"


def require_validator() -> None:
    """Skip where shared/ is not beside the checkout; CI always has it, so
    there a missing validator fails instead of passing unchecked."""
    if not VALIDATOR.exists():
        if os.environ.get("CI"):
            pytest.fail(f"the W3C validator is missing: {VALIDATOR}")
        pytest.skip("the W3C validator (../shared/feedvalidator) is not beside this checkout")


def validate(paths: Iterable[Path]) -> list[Finding]:
    """Errors and warnings (what the online validator shows) for each file.
    The validator runs on this interpreter, which has html5lib and rdflib
    from the test extras, so it never needs to install anything."""
    files = [str(path) for path in paths]
    if not files:
        return []
    done = subprocess.run([str(VALIDATOR), *files], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable})
    if done.returncode not in (0, 1, 2):
        raise AssertionError(f"the validator could not run (exit {done.returncode}): "
                             f"{done.stderr[-2000:]}")
    findings = []
    for line in done.stdout.splitlines():
        if (match := _FINDING.match(line)) and match["level"] != "INFO":
            findings.append(Finding(Path(match["file"]), match["level"], match["kind"],
                                    int(match["line"]), match["message"]))
    return findings
