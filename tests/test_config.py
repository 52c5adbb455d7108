"""config.toml: reading with file:line errors, editing the source list in place."""

import shutil
import threading
from pathlib import Path

import pytest

from feedhub.config import ConfigError, add_source, load_config, parse_duration, remove_source
from feedhub.models import SourceConfig

EXAMPLE = Path(__file__).resolve().parent.parent / "config.toml"

MINIMAL = '[hub]\nbase_url = "https://hub.example.org/feeds/"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """1-based line number of the only line containing `needle`."""
    found = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, f"{needle!r} on lines {found}"
    return found[0]


def config_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text))
    return caught.value


@pytest.fixture
def example_copy(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    shutil.copyfile(EXAMPLE, path)
    return path


# --- loading ---------------------------------------------------------------------------


def test_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.sources
    for source in config.sources:
        assert source.name
        assert source.url.startswith(("http://", "https://"))
    assert {"en", "de", "fa", "ps"} <= set(config.languages)
    assert config.hub.base_url.endswith("/")
    assert config.hub.allow_private_networks is False


def test_example_config_languages_and_intervals():
    config = load_config(EXAMPLE)
    by_name = {source.name: source for source in config.sources}
    assert by_name["BBC فارسی"].language == "fa"
    assert by_name["BBC پښتو"].language == "ps"
    assert by_name["World Socialist Web Site"].interval == 30 * 60
    assert config.languages["de"].credit == "Quelle: {source}, {date:%d.%m.%Y}"


def test_defaults_with_only_base_url(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    hub = config.hub
    assert hub.base_url == "https://hub.example.org/feeds/"
    assert hub.output_dir == tmp_path / "feeds"
    assert hub.database == tmp_path / "feedhub.db"
    assert hub.items_per_feed == 50
    assert hub.default_interval == 1800
    assert hub.allow_private_networks is False
    assert config.sources == ()


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(tmp_path, monkeypatch):
    nested = tmp_path / "etc" / "feedhub"
    nested.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    config = load_config(write(nested, MINIMAL + 'output_dir = "public"\ndatabase = "state/hub.db"\n'))
    assert config.hub.output_dir == nested / "public"
    assert config.hub.database == nested / "state" / "hub.db"


def test_base_url_gets_a_trailing_slash(tmp_path):
    config = load_config(write(tmp_path, '[hub]\nbase_url = "https://hub.example.org/feeds"\n'))
    assert config.hub.base_url == "https://hub.example.org/feeds/"


def test_source_language_auto_means_undeclared(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + (
        '\n[[sources]]\nname = "A"\nurl = "https://a.example/feed"\nlanguage = "auto"\n'
    )))
    assert config.sources[0].language is None


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "config.toml")


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), (45, 45),
])
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "0s", -5, True])
def test_bad_durations_are_rejected(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bad_duration_in_config_names_the_line(tmp_path):
    text = MINIMAL + 'default_interval = "soon"\n'
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'default_interval')}:" in str(error)
    assert "soon" in str(error)


def test_source_interval_in_config(tmp_path):
    config = load_config(write(tmp_path, MINIMAL + (
        '\n[[sources]]\nname = "A"\nurl = "https://a.example/feed"\ninterval = "15m"\n'
    )))
    assert config.interval_of(config.sources[0]) == 900


# --- errors name the file and the line ----------------------------------------------------------


def test_unknown_hub_key_suggests_the_near_miss(tmp_path):
    text = '# a comment\n[hub]\nbase_url = "https://hub.example.org/"\ntitel = "My hub"\n'
    error = config_error(tmp_path, text)
    assert "config.toml:4:" in str(error)
    assert "titel" in str(error)
    assert "did you mean 'title'" in str(error)


def test_wrong_type_names_the_line(tmp_path):
    text = MINIMAL + 'title = "Hub"\nitems_per_feed = "many"\n'
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'items_per_feed')}:" in str(error)
    assert "items_per_feed" in str(error)
    assert "many" in str(error)


SEVERAL_SOURCES = MINIMAL + """
[[sources]]
name = "First"
url = "https://first.example/feed.xml"
language = "en"

[[sources]]
name = "Second"
url = "https://second.example/feed.xml"
language = "de"

[[sources]]
name = "Third"
url = "https://third.example/feed.xml"
language = "{third_language}"
"""


def test_bad_language_tag_names_the_line_of_that_source(tmp_path):
    text = SEVERAL_SOURCES.format(third_language="not a tag")
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'not a tag')}:" in str(error)
    assert "#3" in str(error)
    assert "language" in str(error)


def test_missing_url_names_the_second_source(tmp_path):
    text = MINIMAL + (
        '\n[[sources]]\nname = "First"\nurl = "https://first.example/feed.xml"\n'
        '\n[[sources]]\nname = "Second"\n'
        '\n[[sources]]\nname = "Third"\nurl = "https://third.example/feed.xml"\n'
    )
    error = config_error(tmp_path, text)
    # the key is missing, so the error points at the table that lacks it
    second_header = [n for n, line in enumerate(text.splitlines(), 1) if line == "[[sources]]"][1]
    assert f"config.toml:{second_header}:" in str(error)
    assert "url" in str(error)
    assert "#2" in str(error)


def test_duplicate_names_point_at_the_second_one(tmp_path):
    text = MINIMAL + (
        '\n[[sources]]\nname = "Same"\nurl = "https://first.example/feed.xml"\n'
        '\n[[sources]]\nname = "Other"\nurl = "https://other.example/feed.xml"\n'
        '\n[[sources]]\nname = "Same"  # again\nurl = "https://third.example/feed.xml"\n'
    )
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, '# again')}:" in str(error)
    assert "duplicate" in str(error)
    assert "Same" in str(error)


def test_duplicate_urls_are_rejected(tmp_path):
    text = MINIMAL + (
        '\n[[sources]]\nname = "One"\nurl = "https://same.example/feed.xml"\n'
        '\n[[sources]]\nname = "Two"\nurl = "https://same.example/feed.xml"  # again\n'
    )
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, '# again')}:" in str(error)
    assert "duplicate" in str(error)


def test_bad_credit_placeholder_names_the_line(tmp_path):
    text = MINIMAL + (
        '\n[languages.en]\ntitle = "English"\n'
        '\n[languages.de]\ntitle = "Deutsch"\ncredit = "Quelle: {source}, {nope}"\n'
    )
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, '{nope}')}:" in str(error)
    assert "credit" in str(error)


def test_toml_syntax_error_names_the_line(tmp_path):
    text = MINIMAL + 'title = "unterminated\nitems_per_feed = 10\n'
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'unterminated')}:" in str(error)
    assert "TOML" in str(error)


def test_unknown_source_key_names_the_line(tmp_path):
    text = SEVERAL_SOURCES.format(third_language="fa").replace(
        'language = "de"', 'langauge = "de"'
    )
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'langauge')}:" in str(error)
    assert "did you mean 'language'" in str(error)


def test_non_http_source_url_is_rejected(tmp_path):
    text = MINIMAL + '\n[[sources]]\nname = "Local"\nurl = "file:///etc/passwd"\n'
    error = config_error(tmp_path, text)
    assert f"config.toml:{line_of(text, 'file:///')}:" in str(error)


# --- editing the source list -------------------------------------------------------------------------


def test_add_source_appends_and_keeps_the_rest_byte_for_byte(example_copy):
    before = example_copy.read_text(encoding="utf-8")
    new = SourceConfig(name="Tolo News", url="https://tolonews.example/feed.xml",
                       language="fa", interval=3600, fulltext="never")
    returned = add_source(example_copy, new)
    after = example_copy.read_text(encoding="utf-8")

    assert after.startswith(before)
    added = after[len(before):]
    assert 'name = "Tolo News"' in added
    assert 'interval = "1h"' in added
    reloaded = load_config(example_copy)
    assert reloaded.find_source("Tolo News") == new
    assert returned.sources == reloaded.sources
    assert len(reloaded.sources) == len(load_config(EXAMPLE).sources) + 1


def test_add_source_to_a_file_without_sources(tmp_path):
    path = write(tmp_path, "# my hub\n" + MINIMAL)
    add_source(path, SourceConfig(name="A", url="https://a.example/feed.xml"))
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# my hub\n" + MINIMAL)
    assert [s.name for s in load_config(path).sources] == ["A"]


def test_remove_source_by_name_keeps_comments_and_layout(example_copy):
    before = example_copy.read_text(encoding="utf-8")
    block = (
        '[[sources]]\nname = "BBC فارسی"\nurl = "https://feeds.bbci.co.uk/persian/rss.xml"\n'
        'language = "fa"\ninterval = "15m"\nfulltext = "never"\n\n'
    )
    assert block in before
    removed, config = remove_source(example_copy, "BBC فارسی")
    after = example_copy.read_text(encoding="utf-8")

    assert removed.url == "https://feeds.bbci.co.uk/persian/rss.xml"
    assert after == before.replace(block, "", 1)
    assert config.find_source("BBC فارسی") is None
    assert load_config(example_copy).sources == config.sources


def test_remove_source_by_url(example_copy):
    removed, _ = remove_source(example_copy, "https://www.wsws.org/de/rss.xml")
    assert removed.name == "World Socialist Web Site (Deutsch)"
    text = example_copy.read_text(encoding="utf-8")
    assert "wsws.org/de/" not in text
    assert "# The World Socialist Web Site publishes one RSS feed per language" in text
    assert [s.name for s in load_config(example_copy).sources] == [
        s.name for s in load_config(EXAMPLE).sources if s.name != removed.name]


def test_removing_the_first_source_keeps_the_comments(example_copy):
    before = example_copy.read_text(encoding="utf-8")
    comments = [line for line in before.splitlines() if line.startswith("#")]
    remove_source(example_copy, "World Socialist Web Site")
    after = example_copy.read_text(encoding="utf-8")
    assert [line for line in after.splitlines() if line.startswith("#")] == comments
    assert load_config(example_copy).sources[0].name == "World Socialist Web Site (Deutsch)"


def test_add_then_remove_restores_the_file(example_copy):
    before = example_copy.read_bytes()
    add_source(example_copy, SourceConfig(name="Temp", url="https://temp.example/feed.xml"))
    remove_source(example_copy, "Temp")
    assert example_copy.read_bytes() == before


@pytest.mark.parametrize("duplicate", [
    SourceConfig(name="BBC پښتو", url="https://elsewhere.example/feed.xml"),
    SourceConfig(name="Another name", url="https://feeds.bbci.co.uk/pashto/rss.xml"),
], ids=["same-name", "same-url"])
def test_add_duplicate_is_refused_and_the_file_is_untouched(example_copy, duplicate):
    before = example_copy.read_bytes()
    with pytest.raises(ConfigError, match="already"):
        add_source(example_copy, duplicate)
    assert example_copy.read_bytes() == before


def test_remove_unknown_source_is_refused_and_the_file_is_untouched(example_copy):
    before = example_copy.read_bytes()
    with pytest.raises(ConfigError, match="no source"):
        remove_source(example_copy, "Not There")
    assert example_copy.read_bytes() == before


def test_add_to_a_broken_config_is_refused_and_the_file_is_untouched(tmp_path):
    path = write(tmp_path, MINIMAL + "items_per_feed = 0\n")
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="items_per_feed"):
        add_source(path, SourceConfig(name="A", url="https://a.example/feed.xml"))
    assert path.read_bytes() == before


def test_concurrent_adds_lose_nothing(tmp_path):
    path = write(tmp_path, "# concurrent edits\n" + MINIMAL)
    errors: list[BaseException] = []

    def add_many(prefix: str) -> None:
        try:
            for n in range(20):
                add_source(path, SourceConfig(name=f"{prefix} {n}",
                                              url=f"https://{prefix}.example/{n}.xml"))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=add_many, args=(prefix,)) for prefix in ("alpha", "beta")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    names = {source.name for source in load_config(path).sources}
    assert names == {f"{prefix} {n}" for prefix in ("alpha", "beta") for n in range(20)}
    assert path.read_text(encoding="utf-8").startswith("# concurrent edits\n")


@pytest.mark.parametrize(("value", "expected"), [
    ('"auto"', "auto"), ('"always"', "always"), ('"never"', "never"), ("true", "always"),
    ("false", "never"), (None, "auto")])
def test_fulltext_modes(tmp_path, value, expected):
    extra = f"fulltext = {value}\n" if value else ""
    path = write(tmp_path, MINIMAL + f'[[sources]]\nname = "a"\nurl = "https://a.example/f"\n{extra}')
    assert load_config(path).sources[0].fulltext == expected


def test_fulltext_rejects_other_values(tmp_path):
    path = write(tmp_path, MINIMAL + '[[sources]]\nname = "a"\nurl = "https://a.example/f"\n'
                 'fulltext = "sometimes"\n')
    with pytest.raises(ConfigError, match=r"'fulltext': expected \"auto\", \"always\" or \"never\""):
        load_config(path)
