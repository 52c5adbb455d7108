"""Parser workers share what they all load (issue 13): the forkserver loads
the language model before it forks them, and the owner does not load it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

OWNER = """
import json
from feedhub import enrich
from feedhub.worker import parser_pool

MODEL = "__import__('feedhub.enrich').enrich._identifier"

if __name__ == "__main__":
    pool = parser_pool(1)
    # the worker's first task: nothing in it has detected a language yet
    loaded, before, frozen = pool.submit(
        eval, f"({MODEL} is not None, id({MODEL}), __import__('gc').get_freeze_count())").result()
    language, _ = pool.submit(enrich.detect_language, "Die Katze sitzt auf der Matte und "
                              "schläft den ganzen Tag, während draußen der Regen fällt.").result()
    after = pool.submit(eval, f"id({MODEL})").result()
    pool.shutdown()
    print(json.dumps({"loaded": loaded, "same": before == after, "frozen": frozen,
                      "language": language, "owner_loaded": enrich._identifier is not None}))
"""


def test_workers_get_the_language_model_from_the_forkserver(tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(OWNER, encoding="utf-8")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    # loaded before the worker was forked, and detection loads nothing new
    assert found["loaded"] and found["same"] and found["language"] == "de"
    assert found["frozen"] > 0  # gc.freeze(): the collector leaves the shared pages alone
    assert not found["owner_loaded"]  # the daemon parses in its workers: no copy of its own
