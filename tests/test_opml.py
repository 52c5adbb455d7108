"""OPML import and export through the CLI: a round trip keeps every
source, duplicates are skipped with a reason."""

from __future__ import annotations

import json

from hubdir import HubDir

OPML = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0"><head><title>Reader export</title></head><body>
<outline text="News">
  <outline type="rss" text="WSWS" title="World Socialist" xmlUrl="https://www.wsws.org/en/rss.xml"/>
  <outline type="rss" text="BBC فارسی" xmlUrl="https://feeds.bbci.co.uk/persian/rss.xml" language="fa"/>
</outline>
<outline type="rss" text="Again" xmlUrl="https://www.wsws.org/en/rss.xml"/>
<outline type="rss" text="Pashto" xmlUrl="https://feeds.bbci.co.uk/pashto/rss.xml" language="ps"
         interval="15m" fulltext="never"/>
<outline type="rss" text="Not http" xmlUrl="ftp://example.org/feed"/>
<outline text="A folder without feeds"/>
</body></opml>"""


def test_import_adds_folders_and_skips_duplicates_with_a_reason(hub: HubDir, tmp_path) -> None:
    path = tmp_path / "subs.opml"
    path.write_text(OPML, encoding="utf-8")
    hub.run("add", "https://feeds.bbci.co.uk/persian/rss.xml", "--name", "mine", "--no-check")
    result = hub.run("import", str(path))
    assert result.returncode == 0, result.stderr
    assert "Added 2 sources" in result.stdout and "skipped 3" in result.stdout
    assert "Importing" in result.stderr  # the progress bar (its label alone when not on a terminal)
    assert "skipped 'BBC فارسی': https://feeds.bbci.co.uk/persian/rss.xml is already a source" \
        in result.stdout
    assert "skipped 'Again'" in result.stdout and "skipped 'Not http'" in result.stdout
    rows = {row["name"]: row for row in json.loads(hub.run("list", "--json").stdout)}
    assert set(rows) == {"mine", "World Socialist", "Pashto"}
    assert rows["Pashto"]["language"] == "ps" and rows["Pashto"]["interval"] == "15m"
    assert "# A test hub: comments must survive" in hub.config.read_text(encoding="utf-8")


def test_export_then_import_round_trips(hub: HubDir, tmp_path) -> None:
    hub.run("add", "https://a.example/feed", "--name", "A", "--language", "de", "--interval", "2h",
            "--fulltext", "--no-check")
    hub.run("add", "https://b.example/feed", "--name", "B ی‌ک", "--no-check")
    exported = hub.run("export")
    assert exported.returncode == 0 and exported.stdout.startswith("<?xml")
    (tmp_path / "out.opml").write_text(exported.stdout, encoding="utf-8")
    (tmp_path / "other").mkdir()
    other = HubDir(tmp_path / "other")
    assert other.run("import", str(tmp_path / "out.opml")).returncode == 0
    fields = ("name", "url", "language", "interval", "fulltext")
    mine = [{k: r[k] for k in fields} for r in json.loads(hub.run("list", "--json").stdout)]
    theirs = [{k: r[k] for k in fields} for r in json.loads(other.run("list", "--json").stdout)]
    assert mine == theirs and len(mine) == 2


def test_a_hostile_or_broken_opml_file_is_refused(hub: HubDir, tmp_path) -> None:
    bomb = tmp_path / "bomb.opml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaa">]><opml>&a;</opml>')
    result = hub.run("import", str(bomb))
    assert result.returncode == 1 and "refused" in result.stderr
    broken = tmp_path / "broken.opml"
    broken.write_text("<opml><body><outline")
    result = hub.run("import", str(broken))
    assert result.returncode == 1 and "not well-formed OPML" in result.stderr
