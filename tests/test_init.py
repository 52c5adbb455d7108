"""`feedhub init`: from an empty directory to a running hub, through the real
CLI entry point run as a subprocess."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from feedhub._files import create_new
from feedhub.config import load_config
from hubdir import FEEDHUB, FIXTURES, wait_for

EXAMPLE_FEED = "https://example.org/feed.xml"  # the URL in the printed `add` command


def entry_point() -> list[str]:
    return [str(FEEDHUB)] if FEEDHUB.exists() else [sys.executable, "-m", "feedhub"]


def env(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k != "FEEDHUB_CONFIG"}
    return {**environment, **extra}


def feedhub(cwd: Path, *args: str, environment: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*entry_point(), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=environment or env())


def next_commands(stdout: str) -> list[list[str]]:
    """The commands init tells the operator to type, split as a shell would."""
    return [shlex.split(line) for line in stdout.splitlines() if line.startswith("    feedhub ")]


def test_init_writes_a_commented_config_that_loads_with_no_sources(tmp_path: Path) -> None:
    done = feedhub(tmp_path, "init")
    assert done.returncode == 0, done.stderr
    path = tmp_path / "config.toml"
    assert done.stdout == (
        "Wrote config.toml: hub 'feedhub' at http://localhost:8080/, no sources yet; feeds go to "
        "feeds/, the database is feedhub.db.\n"
        "Next, add a feed (or a site's page) and run the hub:\n"
        f"    feedhub add {EXAMPLE_FEED}\n"
        "    feedhub run\n")
    config = load_config(path)
    assert config.sources == ()
    assert config.hub.title == "feedhub"
    assert config.hub.base_url == "http://localhost:8080/"
    assert config.hub.output_dir == tmp_path / "feeds"
    assert config.hub.database == tmp_path / "feedhub.db"
    assert config.hub.allow_private_networks is False  # the guard stays on
    assert list(config.languages) == ["en"]
    assert config.languages["en"].credit == "{source} {date:%d.%m.%Y}"
    text = path.read_text(encoding="utf-8")
    assert "\n# [[sources]]\n" in text and "\n[[sources]]" not in text  # an example, commented
    assert text.count("\n# ") > 40  # commented like the example config
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temp file left

    listed = feedhub(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == "No sources yet. Add one with: feedhub add URL\n"
    as_json = feedhub(tmp_path, "list", "--json")
    assert (as_json.returncode, as_json.stdout) == (0, "[]\n")


@pytest.mark.parametrize("where", [None, "my hub/config.toml"], ids=["here", "elsewhere"])
def test_the_printed_next_commands_add_a_feed_and_run_the_hub(
        tmp_path: Path, feed_server, where: str | None) -> None:
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    path = tmp_path / (where or "config.toml")
    path.parent.mkdir(exist_ok=True)
    done = feedhub(tmp_path, *(["--config", where] if where else []), "init")
    assert done.returncode == 0, done.stderr
    add, run = next_commands(done.stdout)
    expected_option = ["--config", where] if where else []  # quoted in the output: it has a space
    assert add == ["feedhub", *expected_option, "add", EXAMPLE_FEED]
    assert run == ["feedhub", *expected_option, "run"]

    # `add` fetches the URL, and the feed server is on 127.0.0.1, which the
    # starter config rightly refuses: the test turns on the commented-out
    # allow_private_networks line under [hub] (rather than `add --no-check`,
    # since `run` polls the feed too).
    text = path.read_text(encoding="utf-8")
    assert text.count("\n# allow_private_networks = true\n") == 1
    path.write_text(text.replace("\n# allow_private_networks = true\n",
                                 "\nallow_private_networks = true\n"), encoding="utf-8")

    url = feed_server.url("/wsws.rss")
    added = subprocess.run([*entry_point(), *add[1:-1], url], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path, env=env())
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"Added 'World Socialist Web Site' ({url}), language en.\n"
    [source] = load_config(path).sources
    assert source.url == url
    assert "# feedhub configuration, written by `feedhub init`." in path.read_text(encoding="utf-8")

    daemon = subprocess.Popen([*entry_point(), *run[1:]], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env())
    try:
        feed = path.parent / "feeds" / "en.atom"
        wait_for(feed.exists, timeout=60)
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, log = daemon.communicate(timeout=30)
    assert daemon.returncode == 0, log
    assert b"<title>US-backed coup regime in Peru" in feed.read_bytes()
    assert (path.parent / "feedhub.db").exists()  # beside the config, not in the cwd
    if where is not None:
        assert not (tmp_path / "feeds").exists()


def test_init_never_overwrites_a_config(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("# my own hub\n[hub]\ntitle = \"Mine\"\n", encoding="utf-8")
    before = path.read_bytes()
    for environment, args in ((env(), ["init"]),
                              (env(), ["--config", str(path), "init", "--title", "Other"]),
                              (env(FEEDHUB_CONFIG=str(path)), ["init"])):
        refused = feedhub(tmp_path, *args, environment=environment)
        assert refused.returncode == 2, refused
        assert "config.toml already exists: not overwritten" in refused.stderr
        assert refused.stdout == ""
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_init_where_feedhub_config_says(tmp_path: Path) -> None:
    done = feedhub(tmp_path, "init", environment=env(FEEDHUB_CONFIG="hub.toml"))
    assert done.returncode == 0, done.stderr
    assert load_config(tmp_path / "hub.toml").sources == ()
    assert not (tmp_path / "config.toml").exists()
    assert [c[:3] for c in next_commands(done.stdout)] == [["feedhub", "--config", "hub.toml"]] * 2


@pytest.mark.parametrize(("url", "reason"), [
    ("ftp://example.org/feeds/", "the scheme is 'ftp', not http or https"),
    ("example.org/feeds/", "not an absolute URL"),
    ("http://0177.0.0.1/", "Invalid IPv4 address"),
    ("https://news.example.org/my feeds/", "it contains a space"),
    ("https://example.org:99999/", "port 99999 is out of range"),
])
def test_an_invalid_base_url_is_bad_usage_and_writes_nothing(
        tmp_path: Path, url: str, reason: str) -> None:
    refused = feedhub(tmp_path, "init", "--base-url", url)
    assert refused.returncode == 2, refused
    assert f"Invalid value for '--base-url': {url!r} is not an absolute http(s) URL" \
        in refused.stderr
    assert reason in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_title_is_bad_usage(tmp_path: Path) -> None:
    refused = feedhub(tmp_path, "init", "--title", "  ")
    assert refused.returncode == 2
    assert "Invalid value for '--title'" in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_title_with_quotes_and_persian_round_trips(tmp_path: Path) -> None:
    title = 'Nachrichten "Welt" — زبان‌های \\ اروپایی'
    done = feedhub(tmp_path, "init", "--title", title, "--base-url", "https://news.example.org/feeds")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Wrote config.toml: hub {title!r} at https://news.example.org/feeds/,")
    config = load_config(tmp_path / "config.toml")
    assert config.hub.title == title
    assert config.hub.base_url == "https://news.example.org/feeds/"  # written as the hub uses it
    assert feedhub(tmp_path, "list").returncode == 0


def test_a_missing_directory_is_a_failure(tmp_path: Path) -> None:
    failed = feedhub(tmp_path, "--config", "nowhere/config.toml", "init")
    assert failed.returncode == 1
    assert "cannot write nowhere/config.toml: No such file or directory" in failed.stderr


def test_create_new_refuses_an_existing_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    create_new(path, b"first\n")
    with pytest.raises(FileExistsError):
        create_new(path, b"second\n")
    assert path.read_bytes() == b"first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_create_new_without_hard_links_creates_exclusively(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: object, target: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "config.toml"
    create_new(path, b"first\n", mode=0o600)
    assert path.read_bytes() == b"first\n"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(FileExistsError):
        create_new(path, b"second\n")
    assert path.read_bytes() == b"first\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


def test_the_database_and_output_directory_can_be_chosen(tmp_path: Path) -> None:
    """What "Running as a service" does: the config in one place, the state
    in another (absolute paths stay absolute; relative ones are from the file)."""
    state = tmp_path / "var lib"
    state.mkdir()
    (tmp_path / "etc").mkdir()
    done = feedhub(tmp_path, "--config", "etc/config.toml", "init",
                   "--database", str(state / "feedhub.db"), "--output-dir", str(state / "feeds"))
    assert done.returncode == 0, done.stderr
    config = load_config(tmp_path / "etc" / "config.toml")
    assert config.hub.database == state / "feedhub.db"
    assert config.hub.output_dir == state / "feeds"
    relative = feedhub(tmp_path, "--config", "rel.toml", "init", "--output-dir", "out/feeds")
    assert relative.returncode == 0, relative.stderr
    assert load_config(tmp_path / "rel.toml").hub.output_dir == tmp_path / "out" / "feeds"
    empty = feedhub(tmp_path, "--config", "e.toml", "init", "--database", " ")
    assert empty.returncode == 2 and not (tmp_path / "e.toml").exists(), empty.stderr
