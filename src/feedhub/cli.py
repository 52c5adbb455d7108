"""The `feedhub` command: click commands over config, hub and daemon.

Exit codes: 0 success, 1 the work failed (a source unreachable, not a feed,
a duplicate), 2 bad usage or a bad config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import click
from tabulate import tabulate

from feedhub import __version__, logs, websub
from feedhub import config as configuration
from feedhub._files import AlreadyRunning
from feedhub.config import (
    ConfigError,
    format_duration,
    http_url_problem,
    parse_duration,
)
from feedhub.discover import DiscoveredFeed, DiscoveryError, discover_feeds
from feedhub.fetch import Fetcher, FetchError
from feedhub.hub import Hub, forked_parser_pool, make_fetcher
from feedhub.models import Config, HubConfig, PollReport, SourceConfig, normalize_language
from feedhub.publish import PublishedFeed
from feedhub.status import ago, nodes_json, source_reason
from feedhub.status import report as status_report
from feedhub.store import open_store, redacted

POOL_THRESHOLD = 8  # sources in one `poll` from which parsing goes to worker processes


class Failure(click.ClickException):
    """The command ran but its work failed: exit 1 with a message."""

    exit_code = 1


class BadConfig(click.ClickException):
    exit_code = 2


def _load(ctx: click.Context) -> Config:
    try:
        return configuration.load_config(ctx.obj["config"])
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None


def _fail(message: str) -> NoReturn:
    raise Failure(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=configuration.DEFAULT_CONFIG, envvar="FEEDHUB_CONFIG", show_default=True,
              show_envvar=True, help="The hub's config file.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"],
              case_sensitive=False), default="info", show_default=True,
              help="How much to log (to stderr).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Log lines as text, or one JSON object per line.")
@click.version_option(__version__, prog_name="feedhub")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, log_level: str, log_format: str) -> None:
    """feedhub: poll news feeds, keep every article, republish one Atom feed
    per language with full text and source credits."""
    logs.configure(log_level, log_format)
    ctx.obj = {"config": config_path}


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration like 90s, 30m, 2h or 1d") from None


def _language(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None or value == "auto":
        return None
    tag = normalize_language(value)
    if tag is None:
        raise click.BadParameter(f"{value!r} is not a language tag like en, fa or pt-BR")
    return tag


def _base_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return configuration.normalize_base_url(value)
    except ValueError as exc:
        why = f": {exc}" if isinstance(exc, configuration.InvalidValue) else ""
        raise click.BadParameter(f"{value!r} is not an absolute http(s) URL{why}") from None


def _title(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():
        raise click.BadParameter("the title must not be empty")
    return value.strip()


@cli.command()
@click.option("--base-url", default=HubConfig.base_url, show_default=True, callback=_base_url,
              metavar="URL", help="Public URL where the feeds will be served (choose it once: "
                                  "entry ids are built from it).")
@click.option("--title", default=HubConfig.title, show_default=True, callback=_title,
              help="The hub's name.")
@click.option("--output-dir", default=str(HubConfig.output_dir), show_default=True,
              metavar="DIR", help="Where the feeds and pages go (relative: to the config file).")
@click.option("--database", default=str(HubConfig.database), show_default=True, metavar="FILE",
              help="The SQLite database (relative: to the config file), or a postgresql:// URL.")
@click.pass_context
def init(ctx: click.Context, base_url: str, title: str, output_dir: str, database: str) -> None:
    """Start a hub: write a commented config.toml with no sources yet (where
    --config says), and print the next two commands. An existing file is
    never overwritten (exit 2).

    \b
    Example:
        feedhub init --base-url https://news.example.org/feeds/ --title "My news"
    """
    path: Path = ctx.obj["config"]
    try:
        config = configuration.write_starter_config(path, title, base_url, output_dir, database)
    except FileExistsError:
        raise BadConfig(f"{path} already exists: not overwritten. Edit it, or choose another "
                        "file with --config PATH") from None
    except ValueError as exc:  # an empty --output-dir or --database
        raise click.BadParameter(str(exc) or "must not be empty") from None
    except OSError as exc:
        _fail(f"cannot write {path}: {exc.strerror or exc}")
    here = Path(configuration.DEFAULT_CONFIG).absolute()
    config_option = "" if path.absolute() == here else f" --config {shlex.quote(str(path))}"
    click.echo(f"Wrote {path}: hub {config.hub.title!r} at {config.hub.base_url}, no sources yet;"
               f" feeds go to {_shown(config.hub.output_dir)}/, the database is "
               f"{_shown(config.hub.database)}.")
    click.echo("Next, add a feed (or a site's page) and run the hub:")
    click.echo(f"    feedhub{config_option} add https://example.org/feed.xml")
    click.echo(f"    feedhub{config_option} run")


def _shown(path: Path | str) -> str:
    """A path as short as it can be said from the current directory; a
    database URL without its password."""
    if isinstance(path, str):
        return redacted(path)
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@cli.command()
@click.argument("url")
@click.option("--name", help="A short unique name (default: the feed's title).")
@click.option("--language", callback=_language,
              help="Language tag of the items, e.g. fa (default: what the feed declares).")
@click.option("--interval", callback=_duration, help="How often to poll, e.g. 30m.")
@click.option("--fulltext/--no-fulltext", default=None,
              help="Always / never fetch each article's page for its full text "
                   "(default: only when the feed carries a teaser).")
@click.option("--pick", type=click.IntRange(min=1), metavar="N",
              help="When URL is a page offering several feeds, add the Nth of the list "
                   "instead of asking.")
@click.option("--no-check", is_flag=True,
              help="Do not fetch the URL to check it is a feed (nor look for feeds on a page).")
@click.pass_context
def add(ctx: click.Context, url: str, name: str | None, language: str | None,
        interval: int | None, fulltext: bool | None, pick: int | None, no_check: bool) -> None:
    """Add the feed at URL as a source (written to the config file).

    URL may also be a site's page: its feeds are found (the page's <link
    rel="alternate"> feeds, else common paths such as /feed or /rss.xml) and
    checked; the only one is added, or you choose among several (--pick N
    chooses without asking).

    \b
    Examples:
        feedhub add https://www.wsws.org/en/rss.xml --name "World Socialist"
        feedhub add https://blog.example.org/
        feedhub add https://blog.example.org/ --pick 2
    """
    config = _load(ctx)
    if problem := http_url_problem(url):  # before anything is fetched or written
        raise click.BadParameter(f"{url!r} is not an http(s) URL that can be requested: {problem}",
                                 param_hint="URL")
    if pick is not None and no_check:
        raise click.UsageError("--pick chooses among the feeds found on a page: it needs the page "
                               "fetched, so it cannot go with --no-check")
    if (existing := config.find_source(url)) is not None:
        _fail(f"{url} is already a source (named {existing.name!r})")
    if name is not None and config.find_source(name) is not None:
        _fail(f"a source named {name!r} already exists; choose another --name")
    if not no_check:
        feed = _choose_feed(config, url, asyncio.run(_discover(config, url)), pick)
        if feed.url != url and (existing := config.find_source(feed.url)) is not None:
            _fail(f"{feed.url} is already a source (named {existing.name!r})")
        if problem := http_url_problem(feed.url):  # a link on a page: the page's mistake
            _fail(f"the feed found on {url}, {feed.url!r}, is not an http(s) URL that can be "
                  f"requested: {problem}")
        url = feed.url
        name = name or feed.title
        if language is None and feed.language:
            language = normalize_language(feed.language)
    if not name:
        name = urlsplit(url).hostname
        assert name is not None, url  # http_url_problem refused every URL without a host
    source = SourceConfig(name=name, url=url, language=language, interval=interval,
                          fulltext={True: "always", False: "never", None: "auto"}[fulltext])
    try:
        configuration.add_source(config.path, source)
    except ConfigError as exc:
        _fail(exc.message + ("; choose a name with --name" if "named" in exc.message else ""))
    details = ", ".join(filter(None, [
        f"language {language}" if language else "language from the feed",
        f"every {format_duration(interval)}" if interval else None]))
    click.echo(f"Added {name!r} ({url}), {details}.")


async def _discover(config: Config, url: str) -> list[DiscoveredFeed]:
    async with make_fetcher(config) as fetcher:
        try:
            return await discover_feeds(fetcher, url)
        except FetchError as exc:
            _fail(f"cannot fetch {url}: {exc}")
        except DiscoveryError as exc:
            _fail(str(exc))


def _choose_feed(config: Config, url: str, feeds: list[DiscoveredFeed],
                 pick: int | None) -> DiscoveredFeed:
    """The URL's own feed; or the one found on the page; or the one --pick
    or the operator at the prompt chooses among several (already configured
    ones are marked, so nobody picks a duplicate by accident)."""
    if pick is not None and pick > len(feeds):
        found = "it is a feed itself" if feeds[0].via == "url" else f"{len(feeds)} found on the page"
        raise click.BadParameter(f"{pick} is not in the list: {found}", param_hint="--pick")
    if feeds[0].via == "url":
        return feeds[0]
    if len(feeds) == 1:
        click.echo(f"Found 1 feed on {url}: {feeds[0].url}")
        return feeds[0]
    if pick is None and all(config.find_source(feed.url) for feed in feeds):
        _fail(f"every feed found on {url} is already a source: "
              + ", ".join(feed.url for feed in feeds))
    rows = []
    for number, feed in enumerate(feeds, 1):
        existing = config.find_source(feed.url)
        note = f" (already a source, named {existing.name!r})" if existing else ""
        rows.append([number, (feed.title or "") + note, feed.url])
    click.echo(f"Found {len(feeds)} feeds on {url}:")
    click.echo(tabulate(rows, headers=["#", "title", "url"]))
    if pick is None:
        try:
            pick = click.prompt(f"Add which feed? (1-{len(feeds)})",
                                type=click.IntRange(1, len(feeds)))
        except click.Abort:
            _fail(f"no feed chosen; choose one with --pick N (1-{len(feeds)})")
    else:
        click.echo(f"Picked {pick}: {feeds[pick - 1].url}")
    return feeds[pick - 1]


@cli.command()
@click.argument("name_or_url")
@click.pass_context
def remove(ctx: click.Context, name_or_url: str) -> None:
    """Remove a source. Its items leave the published feeds at the next
    publish; they stay in the database.

    \b
    Example:
        feedhub remove "World Socialist"
    """
    config = _load(ctx)
    if config.find_source(name_or_url) is None:
        raise click.BadParameter(f"no source named {name_or_url!r} (see `feedhub list`)",
                                 param_hint="NAME_OR_URL")
    try:
        source, _ = configuration.remove_source(config.path, name_or_url)
    except ConfigError as exc:
        _fail(exc.message)
    click.echo(f"Removed {source.name!r} ({source.url}).")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@cli.command("import")
@click.argument("opml_file", type=click.File("rb"))
@click.pass_context
def import_(ctx: click.Context, opml_file: Any) -> None:
    """Add the sources of an OPML file (folders included), skipping URLs or
    names already configured, and report what was added and skipped.

    \b
    Example:
        feedhub import subscriptions.opml
    """
    from feedhub.opml import OpmlError, import_opml

    config = _load(ctx)
    try:
        candidates = import_opml(opml_file.read())
    except OpmlError as exc:
        _fail(f"{opml_file.name}: {exc}")
    bad = []
    with click.progressbar(candidates, label="Importing", file=sys.stderr) as bar:
        checked = []
        for source in bar:
            if problem := http_url_problem(source.url):
                bad.append((source, f"{source.url!r} is not an http(s) URL that can be requested: {problem}"))
            else:
                checked.append(source)
    _, skipped = configuration.add_sources(config.path, checked)
    skipped = bad + skipped
    added = len(candidates) - len(skipped)
    click.echo(f"Added {added} sources from {opml_file.name}; skipped {len(skipped)}.")
    for source, reason in skipped:
        click.echo(f"  skipped {source.name!r}: {reason}")


@cli.command("export")
@click.option("--output", "-o", type=click.File("wb"), default="-", show_default=True,
              help="Write the OPML here.")
@click.pass_context
def export(ctx: click.Context, output: Any) -> None:
    """Write the sources as OPML 2.0 (with language, interval, fulltext).

    \b
    Example:
        feedhub export -o subscriptions.opml
    """
    from feedhub.opml import export_opml

    config = _load(ctx)
    output.write(export_opml(config.sources, config.hub.title))


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.pass_context
def list_sources(ctx: click.Context, as_json: bool) -> None:
    """List the sources with their settings and last poll."""
    config = _load(ctx)
    with open_store(config.hub.database) as store:
        states = {s.name: s for s in store.source_states([s.name for s in config.sources])}
    rows = []
    for source in config.sources:
        state = states[source.name]
        rows.append({
            "name": source.name, "url": source.url, "language": source.language or "auto",
            "interval": format_duration(config.interval_of(source)),
            "fulltext": source.fulltext, "items": state.items,
            "last_poll": state.last_poll, "last_status": state.last_status,
            "last_error": state.last_error,
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=_json_default))
        return
    if not rows:
        click.echo("No sources yet. Add one with: feedhub add URL")
        return
    click.echo(tabulate(
        [[r["name"], r["language"], r["interval"], r["items"],
          r["last_status"] or ("error" if r["last_error"] else "-"), r["url"]] for r in rows],
        headers=["name", "language", "interval", "items", "status", "url"]))



@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts and monitoring.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Health of every source: its state (ok, degraded, empty, failing,
    retired, new), last poll, HTTP status, error streak and last error or
    why it is degraded or empty, next poll, items stored; then a summary.

    \b
    Example:
        feedhub status
        feedhub status --json | jq '.summary'
    """
    config = _load(ctx)
    names = [s.name for s in config.sources]
    now = datetime.now(UTC)
    with open_store(config.hub.database) as store:
        found = status_report(config, store)
        nodes = nodes_json(config, store, now)
    states, health, summary = found.states, found.health, found.summary
    per_language, fulltext, withdrawn = found.per_language, found.fulltext, found.withdrawn
    disagree = len({node["config_hash"] for node in nodes}) > 1
    if as_json:
        click.echo(json.dumps({"sources": found.sources_json(), "summary": summary,
                               "nodes": nodes, "nodes_disagree": disagree}, indent=2,
                              ensure_ascii=False, default=_json_default))
        return
    if states:
        click.echo(tabulate([[
            st.name, h, ago(st.last_poll, now), st.last_status or "-", st.error_count,
            "-" if st.retired else ago(st.next_poll, now), st.items,
            _shorten(source_reason(st, h), 60)] for st, h in zip(states, health, strict=True)],
            headers=["source", "state", "last poll", "status", "errors", "next poll", "items",
                     "error / note"]))
        click.echo()
    for name, (count, when) in withdrawn.items():
        if name in names:
            click.echo(f"{name}: {count} items withdrawn (takedown at {when})")
    for name, (count, reason) in fulltext.items():
        if name in names:
            click.echo(f"{name}: full text not extracted for {count} items; latest: {reason}")
    languages = ", ".join(f"{lang} {count}" for lang, count in per_language.items()) or "none"
    click.echo(f"{summary['sources']} sources: {summary['ok']} ok, {summary['degraded']} degraded, "
               f"{summary['empty']} empty, {summary['failing']} failing, "
               f"{summary['retired']} retired, {summary['new']} not polled yet. "
               f"Items per language: {languages}.")
    for node in nodes:
        click.echo(f"node {node['node']} (pid {node['pid']} on {node['hostname']}): started "
                   f"{ago(node['started'], now)}, seen {ago(node['last_seen'], now)}, config "
                   f"{node['config_hash'][:12]}"
                   f"{'' if node['same_config'] else ' (not this config.toml)'}")
    if disagree:
        click.echo("warning: the running nodes run different configs: ship the same "
                   "config.toml to every node")


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "poll_all", is_flag=True, help="Poll every source, due or not.")
@click.option("--json", "as_json", is_flag=True, help="Print the poll reports as JSON.")
@click.pass_context
def poll(ctx: click.Context, names: tuple[str, ...], poll_all: bool, as_json: bool) -> None:
    """Poll the due sources once (or the NAMES given, or --all), store new
    items, publish, ping the WebSub hubs for the feeds written, and print a
    summary. Exits 1 if any poll failed (a failed ping is only a warning).

    \b
    Example:
        feedhub poll --all
    """
    config = _load(ctx)
    sources = _select(config, names, poll_all)
    reports, published, pings = asyncio.run(
        _poll_and_publish(config, sources, poll_all or bool(names)))
    if as_json:
        click.echo(json.dumps([{**asdict(r), "languages": sorted(r.languages)} for r in reports],
                              indent=2, ensure_ascii=False, default=_json_default))
    elif reports:
        click.echo(tabulate(
            [[r.source, r.status or "-", r.new, r.updated, f"{r.duration:.2f}s",
              r.error or (f"degraded: {r.degraded}" if r.degraded else r.note) or ""]
             for r in reports],
            headers=["source", "status", "new", "updated", "time", "error / note"]))
        click.echo(f"{sum(r.new for r in reports)} new, {sum(r.updated for r in reports)} updated"
                   f" items from {len(reports)} sources; {published} feed files rewritten.")
    else:
        click.echo("No source is due. Use --all or name sources to poll them now.")
    _echo_pings(pings, quiet=as_json)
    failed = [r for r in reports if not r.ok]
    if failed:
        _fail(f"{len(failed)} of {len(reports)} sources failed: "
              + "; ".join(f"{r.source}: {r.error}" for r in failed))


def _select(config: Config, names: tuple[str, ...], poll_all: bool) -> list[SourceConfig]:
    if poll_all or not names:
        return list(config.sources)
    selected = []
    for name in names:
        source = config.find_source(name)
        if source is None:
            raise click.BadParameter(f"no source named {name!r} (see `feedhub list`)",
                                     param_hint="NAMES")
        selected.append(source)
    return selected


async def _poll_and_publish(config: Config, sources: list[SourceConfig], force: bool
                            ) -> tuple[list[PollReport], int, list[websub.PingOutcome]]:
    if not force:
        with open_store(config.hub.database) as store:
            now = datetime.now(UTC)
            due = []
            for source in sources:
                state = store.source_state(source.name)
                retired = state.retired and state.url == source.url
                if not retired and (state.next_poll is None or state.next_poll <= now):
                    due.append(source)
            sources = due
    # worker processes pay off only past a handful of sources; made while no
    # database connection is open, so that they can be forked from here
    workers = (os.cpu_count() or 1) if len(sources) >= POOL_THRESHOLD else 0
    with forked_parser_pool(config, workers) as pool, open_store(config.hub.database) as store:
        async with make_fetcher(config, store) as fetcher:  # polite across a cluster too
            hub = Hub(config, store, fetcher, workers=workers, pool=pool)
            try:
                reports = await _with_progress(hub, sources)
                try:
                    # everything: a config edit (a source's policy, rights) must reach
                    # its own feed too; unchanged source feeds are skipped by stamp.
                    # The workers render the new entries, then end.
                    published = hub.publish(release_workers=True)
                except OSError as exc:
                    _fail("polled and stored, but publishing failed (previous feed files "
                          f"kept): {exc}")
            finally:
                hub.close()
            pings = await _ping_hubs(config, published, fetcher)
    return reports, sum(feed.written for feed in published), pings


async def _ping_hubs(config: Config, published: list[PublishedFeed],
                     fetcher: Fetcher | None = None) -> list[websub.PingOutcome]:
    """Ping the WebSub hubs for the feeds just written, waiting for the
    answers but with short retries (websub.CLI_POLICY): the command ends
    within seconds even when a hub is down."""
    topics = [feed.url for feed in published if feed.written and feed.url]
    if not (topics and config.hub.websub_hubs):
        return []
    if fetcher is None:
        async with make_fetcher(config) as own:
            return await _ping_hubs(config, published, own)
    return await websub.ping_all(fetcher, config.hub.websub_hubs, topics, websub.CLI_POLICY,
                                 per_hub=config.hub.max_per_host)


def _echo_pings(pings: list[websub.PingOutcome], quiet: bool = False) -> None:
    """One line per hub. A failed ping is a warning, not a failure: the feed
    files are written, and readers still get the change at their next fetch;
    so it does not change the exit code. `quiet`: no summary on stdout (--json)."""
    by_hub: dict[str, list[websub.PingOutcome]] = {}
    for outcome in pings:
        by_hub.setdefault(outcome.hub, []).append(outcome)
    for hub, outcomes in by_hub.items():
        failed = [o for o in outcomes if not o.ok]
        summary = f"WebSub hub {hub}: {len(outcomes) - len(failed)} of {len(outcomes)} feeds pinged"
        if failed:
            click.echo(f"Warning: {summary}; {failed[0].topic}: {failed[0].detail}. The feed files "
                       "are written; readers see them at their next fetch, and these feeds are pinged "
                       "again when they next change.", err=True)
        elif not quiet:
            click.echo(summary + ".")


async def _with_progress(hub: Hub, sources: list[SourceConfig]) -> list[PollReport]:
    """Poll concurrently; on a terminal, show a progress bar while it runs."""
    if len(sources) < 2 or not sys.stderr.isatty():
        return await hub.poll_many(sources)
    reports: list[PollReport] = []
    with click.progressbar(length=len(sources), label="Polling", file=sys.stderr) as bar:
        for next_done in asyncio.as_completed([hub.poll(s) for s in sources]):
            reports.append(await next_done)
            bar.update(1)
    order = {s.name: i for i, s in enumerate(sources)}
    return sorted(reports, key=lambda r: order[r.source])


@cli.command()
@click.argument("item_or_source")
@click.pass_context
def refetch(ctx: click.Context, item_or_source: str) -> None:
    """Extract the full text again: of one item (its Atom id or original
    link) or of every item of a source (its name or URL), at its next poll.

    \b
    Example:
        feedhub refetch "World Socialist"
        feedhub refetch https://www.wsws.org/en/articles/2022/12/28/peru-d28.html
    """
    config = _load(ctx)
    source = config.find_source(item_or_source)
    with open_store(config.hub.database) as store:
        if source is not None:
            marked = store.mark_refetch(source.name)
            what = f"all {marked} items of {source.name!r}"
        else:
            name = store.find_item_source(item_or_source)
            if name is None or config.find_source(name) is None:
                raise click.BadParameter(
                    f"no source or stored item {item_or_source!r} (see `feedhub list`)",
                    param_hint="ITEM_OR_SOURCE")
            store.mark_refetch(name, item_or_source)
            source = config.find_source(name)
            what = f"the item of {name!r}"
        if source is not None:
            # due now, so that `feedhub poll` (or the daemon) does it next
            state = store.source_state(source.name)
            if state.url is not None:
                store.record_poll(source.name, url=state.url, at=state.last_poll or datetime.now(UTC),
                                  status=state.last_status, error=None,
                                  next_poll=datetime.now(UTC), body_hash=None, etag=None,
                                  last_modified=None)
    click.echo(f"Marked {what} for full-text extraction at the next poll.")


@cli.command()
@click.argument("name_or_url")
@click.pass_context
def withdraw(ctx: click.Context, name_or_url: str) -> None:
    """A takedown: every item of a source leaves all published feeds at
    once (they stay in the database, marked, and `status` records it).
    New items of the source are published again unless you also remove it.

    \b
    Example:
        feedhub withdraw "World Socialist"
    """
    config = _load(ctx)
    source = config.find_source(name_or_url)
    if source is None:
        raise click.BadParameter(f"no source named {name_or_url!r} (see `feedhub list`)",
                                 param_hint="NAME_OR_URL")
    with open_store(config.hub.database) as store:
        languages = store.language_groups([source.name])  # the feeds that held its items
        count = store.withdraw(source.name, datetime.now(UTC))
        if store.shared:
            # every daemon on this database publishes the source's language
            # feeds and its own feed, and (Hub._publish) rewrites the queued
            # archive pages in its own feeds/: the takedown reaches every node
            try:
                store.log_change(languages, [source.name], datetime.now(UTC))
            except Exception as exc:
                _fail(f"withdrew {count} items, but could not tell the other nodes (run "
                      f"`feedhub publish` on each, or `feedhub withdraw` again): {exc}")
        try:
            published = Hub(config, store, None).publish()  # type: ignore[arg-type]
        except OSError as exc:
            _fail(f"withdrew {count} items, but publishing failed (run `feedhub publish`): {exc}")
    click.echo(f"Withdrew {count} items of {source.name!r} from every published feed and archive.")
    _echo_pings(asyncio.run(_ping_hubs(config, published)))  # subscribers learn of it now


@cli.command()
@click.pass_context
def publish(ctx: click.Context) -> None:
    """Regenerate the feeds from what is stored (no polling); ping the
    WebSub hubs for the files written (a failed ping is only a warning)."""
    config = _load(ctx)
    with open_store(config.hub.database) as store:
        try:
            published = Hub(config, store, None).publish()  # type: ignore[arg-type]
        except OSError as exc:
            _fail(f"publishing failed (previous feed files kept): {exc}")
    if not published:
        click.echo("Nothing stored yet: poll first (feedhub poll --all).")
        return
    click.echo(tabulate(
        [[f.language, f.entries, str(f.path), "written" if f.written else "unchanged"]
         for f in published],
        headers=["feed", "entries", "file", ""]))
    _echo_pings(asyncio.run(_ping_hubs(config, published)))


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
    if value is None:
        return None
    from feedhub.server import parse_address

    try:
        return parse_address(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an address like 127.0.0.1:8080") from None


@cli.command()
@click.option("--address", default="127.0.0.1:8080", show_default=True, callback=_address,
              help="Where to listen, HOST:PORT.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Server worker processes (each its own Python, GIL and event loop).")
@click.pass_context
def serve(ctx: click.Context, address: tuple[str, int], workers: int) -> None:
    """Serve the output directory over HTTP (ETag/304, the precompressed
    .br/.gz copies, HEAD, Cache-Control from the next poll, /healthz) with
    Granian, until SIGTERM or SIGINT.

    \b
    Example:
        feedhub serve --address 0.0.0.0:8080
    """
    import socket

    from feedhub.server import die_with_parent, granian_server

    die_with_parent()
    config = _load(ctx)
    config.hub.output_dir.mkdir(parents=True, exist_ok=True)
    try:  # Granian would only log a failed bind: say it here, with the exit code
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as exc:
        _fail(f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}")
    click.echo(f"Serving {config.hub.output_dir} on http://{address[0]}:{address[1]}/", err=True)
    granian_server(ctx.obj["config"], address, workers=workers).serve()


@cli.command()
@click.option("--serve", "serve_address", callback=_address, metavar="HOST:PORT",
              help="Also serve the output directory over HTTP (as `feedhub serve`).")
@click.option("--admin", "admin_address", callback=_address, metavar="HOST:PORT",
              help="Serve /metrics (Prometheus), /status and the detailed /healthz here, "
                   "e.g. 127.0.0.1:9464. They show source names and errors: keep it private.")
@click.pass_context
def run(ctx: click.Context, serve_address: tuple[str, int] | None,
        admin_address: tuple[str, int] | None) -> None:
    """Run the hub: poll each source on its interval and publish after
    changes, until SIGTERM or SIGINT.

    \b
    Example:
        feedhub --config /etc/feedhub/config.toml run --serve 127.0.0.1:8080
        feedhub run --serve 0.0.0.0:8080 --admin 127.0.0.1:9464
    """
    from feedhub import daemon

    _load(ctx)  # a bad config exits 2 before anything starts
    if serve_address and admin_address and serve_address == admin_address:
        raise click.BadParameter("the admin address must differ from the public one",
                                 param_hint="--admin")
    try:
        daemon.run(ctx.obj["config"], serve_address, admin_address)
    except (AlreadyRunning, daemon.CannotListen) as exc:
        _fail(str(exc))
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None


@cli.group()
def db() -> None:
    """The hub's database as a whole: copy it between SQLite and PostgreSQL."""


@db.command("copy")
@click.argument("source", metavar="FROM")
@click.argument("target", metavar="TO")
@click.option("--replace", is_flag=True,
              help="Overwrite a TO that already holds a hub (by default it is refused).")
@click.option("--json", "as_json", is_flag=True, help="Print the rows copied per table as JSON.")
def db_copy(source: str, target: str, replace: bool, as_json: bool) -> None:
    """Copy a whole hub from FROM to TO, each a SQLite file or a
    postgresql:// URL: every table and column, ids, archive pages, slugs,
    schedule, validators and takedowns, so TO publishes the same feeds.
    FROM is only read; TO is written in one transaction (all or nothing).
    Stop the daemon first: a SQLite database is locked against it while
    copying; a PostgreSQL one is read as of one moment.

    \b
    Examples:
        feedhub db copy feedhub.db postgresql://feedhub@db.example.org/feedhub
        feedhub db copy "$FEEDHUB_DATABASE" backup.db --json
    """
    from feedhub._files import DaemonLock
    from feedhub.store import CopyFailed, CopyRefused, copy_database, is_database_url
    from feedhub.store import shown_database as shown

    source_db: Path | str = source if is_database_url(source) else Path(source)
    target_db: Path | str = target if is_database_url(target) else Path(target)
    bar: Any = None

    def progress(rows: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=total, label="Copying", file=sys.stderr)
            bar.__enter__()
        bar.update(rows)

    try:
        with contextlib.ExitStack() as locks:
            files = {database.resolve() for database in (source_db, target_db)
                     if isinstance(database, Path) and database.is_file()}
            for database in sorted(files):  # once each: FROM = TO is refused below
                locks.enter_context(DaemonLock(database))  # no daemon writes meanwhile
            report = copy_database(source_db, target_db, replace=replace,
                                   progress=progress if sys.stderr.isatty() else None)
    except AlreadyRunning as exc:
        _fail(str(exc))
    except CopyRefused as exc:
        raise click.UsageError(str(exc)) from None
    except CopyFailed as exc:
        _fail(str(exc))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    if as_json:
        click.echo(json.dumps({"from": shown(source), "to": shown(target),
                               "schema_version": report.schema_version,
                               "tables": report.tables, "rows": report.rows,
                               "replaced_rows": report.replaced}, indent=2))
        return
    click.echo(tabulate(sorted(report.tables.items()), headers=["table", "rows"]))
    click.echo(f"Copied {report.rows} rows from {shown(source)} to {shown(target)} "
               f"(schema version {report.schema_version})"
               + (f", replacing {report.replaced} rows." if report.replaced else "."))


def main() -> None:
    cli(prog_name="feedhub")


if __name__ == "__main__":
    main()
