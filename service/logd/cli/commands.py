"""The client commands of `logd`: send, query, tail, hits, ping, info, alerts.

Environment (as in the original logd): LOGD_HOST is the HTTP base URL for reads,
writes go to the same host on LOGD_UDP_PORT; LOGD_READ_SECRET / LOGD_WRITE_SECRET,
else the dev-mode secrets file. Heavy imports (urllib, protobuf) happen inside the
command that needs them, so `logd --help` and `logd info` start fast.
"""

from __future__ import annotations

import contextlib
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from logd.cli.output import (
    clean,
    format_alerts,
    format_dropped,
    format_event,
    format_hits,
    format_info,
    format_truncated,
    use_color,
)
from logd.cli.times import TimeError, server_time
from logd.client import env as clientenv
from logd.devsecrets import READ_NAME, WRITE_NAME
from logd.errors import ClientError, ConfigError

if TYPE_CHECKING:
    from logd.client.readclient import ReadClient

LEVELS = ("trace", "debug", "info", "warn", "warning", "error", "fatal")
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.25, 5.0
_SEND_FLUSH_EVERY = 1000  # stdin lines between flushes: `logd send < big.log` never drops

host_option = click.option(
    "--host",
    envvar="LOGD_HOST",
    metavar="URL",
    help=f"HTTP base URL of logd. Env: LOGD_HOST. [default: {clientenv.DEFAULT_HTTP}]",
)
udp_port_option = click.option(
    "--udp-port",
    envvar="LOGD_UDP_PORT",
    metavar="PORT",
    help=f"UDP port on the same host. Env: LOGD_UDP_PORT. [default: {clientenv.DEFAULT_UDP_PORT}]",
)


def _when(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--since / --until as the server's parameter (logd.cli.times)."""
    if value is None:
        return None
    try:
        return server_time(value)
    except TimeError as err:
        raise click.BadParameter(str(err)) from None


_WHEN_HELP = "15m, 1h30m, today, yesterday, or a time (local unless it has a zone)."


def _output_option(*choices: str) -> Callable[[Any], Any]:
    return click.option(
        "-o",
        "--output",
        "fmt",
        type=click.Choice(choices),
        help="text (the default, for people), " + " or ".join(choices[1:]) + ".",
    )


color_option = click.option(
    "--color",
    type=click.Choice(["auto", "always", "never"]),
    default="auto",
    show_default=True,
    help="Colour levels; auto means on a TTY, unless NO_COLOR is set.",
)


def _filter_options(*, query: bool) -> Callable[[Any], Any]:
    """The filters of GET / (query) or GET /tail as flags, named like the parameters: a
    repeated flag ORs its values, --not-NAME excludes (the parameter NAME!)."""
    options = [
        click.option("--env", multiple=True, help="Exact env; repeat for any of several."),
        click.option(
            "--svc", multiple=True, help="Exact svc, or a prefix ending in *; repeatable."
        ),
        click.option("--fn", multiple=True, help="Exact fn; repeatable."),
        # --host is the server's URL: the filter on the event's host is --from-host
        click.option("--from-host", metavar="HOST", multiple=True, help="Exact host; repeatable."),
        click.option("--lvl", metavar="LEVEL", help="Minimum level: trace ... fatal."),
        click.option("--txt", metavar="TEXT", multiple=True, help="Text contains this (any case)."),
        click.option("--url", metavar="PREFIX", multiple=True, help="URL starts with this."),
        click.option("--status", metavar="CODE", multiple=True, help="Exact HTTP response status."),
        click.option("--method", metavar="METHOD", multiple=True, help="HTTP method, e.g. POST."),
        click.option(
            "--attr",
            metavar="KEY=VALUE",
            multiple=True,
            callback=_attr_filters,
            help="Attribute KEY equals VALUE (VALUE* : starts with); repeatable.",
        ),
        *(
            click.option(f"--not-{name}", metavar=metavar, multiple=True, help=f"Exclude: {what}.")
            for name, metavar, what in _EXCLUDES
        ),
        click.option(
            "--not-attr",
            metavar="KEY=VALUE",
            multiple=True,
            callback=_attr_filters,
            help="Exclude events whose attribute KEY is VALUE.",
        ),
        click.option("--since", metavar="WHEN", callback=_when, help=f"From then on: {_WHEN_HELP}"),
    ]
    if query:
        options += [
            click.option(
                "--until", metavar="WHEN", callback=_when, help=f"Up to then: {_WHEN_HELP}"
            ),
            click.option("--limit", metavar="N", help="Most events to return [server: 100]."),
            click.option("--offset", metavar="N", help="Skip this many newest matches."),
        ]

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def _fail(sentence: str, code: int = 1) -> None:
    click.echo(f"logd: {sentence}", err=True)
    sys.exit(code)


def _guarded(run: Callable[[], None]) -> None:
    """Run a command body: expected failures become one sentence and exit 1; a closed
    pipe (`logd query | head`) ends quietly."""
    try:
        run()
    except (ClientError, ConfigError) as err:
        _fail(str(err))
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python would complain again at exit
        sys.exit(1)


def _read_client(host: str | None) -> ReadClient:
    from logd.client.readclient import ReadClient

    base = clientenv.http_base(host)
    found = clientenv.find_secret(READ_NAME)
    if found is None:
        raise ClientError(clientenv.missing_secret(READ_NAME))
    return ReadClient(base, found[0], found[1])


_EXCLUDES = (
    ("env", "ENV", "this env"),
    ("svc", "SVC", "this svc (or prefix*)"),
    ("fn", "FN", "this fn"),
    ("from-host", "HOST", "events from this host"),
    ("txt", "TEXT", "text containing this"),
    ("url", "PREFIX", "URLs starting with this"),
    ("status", "CODE", "this HTTP status"),
    ("method", "METHOD", "this HTTP method"),
)
Params = list[tuple[str, str]]
_PARAM_OF = {"from_host": "host"}  # flags not named like their parameter


def _attr_filters(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}")
        pairs.append((key, value))
    return tuple(pairs)


def _params(filters: dict[str, Any]) -> Params:
    """Flag values as query parameters: --not-NAME is NAME!, --attr k=v is attr.k."""
    out: Params = []
    for flag, value in filters.items():
        if not value:
            continue
        negated = flag.startswith("not_")
        name = _PARAM_OF.get(flag.removeprefix("not_"), flag.removeprefix("not_"))
        for item in value if isinstance(value, tuple) else (value,):
            if name == "attr":
                key, text = item
                out.append((f"attr.{key}" + ("!" if negated else ""), text))
            else:
                out.append((name + ("!" if negated else ""), str(item)))
    return out


# --- send -------------------------------------------------------------------------


def _parse_attrs(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}")
        attrs[key] = value
    return attrs


@click.command()
@click.argument("text", nargs=-1)
@click.option(
    "--lvl", type=click.Choice(LEVELS, case_sensitive=False), default="info", show_default=True
)
@click.option("--env", default="", help="Event env, e.g. prod.")
@click.option("--svc", default="", help="Event svc, e.g. billing-api.")
@click.option("--fn", default="", help="Event fn, e.g. ChargeCard.")
@click.option("--attr", multiple=True, callback=_parse_attrs, metavar="KEY=VALUE", help="Repeat.")
@click.option(
    "--confirm/--no-confirm",
    default=True,
    show_default=True,
    help="After sending, PING logd with the write key: exit 1 if no logd answers.",
)
@host_option
@udp_port_option
def send(
    text: tuple[str, ...],
    lvl: str,
    env: str,
    svc: str,
    fn: str,
    attr: dict[str, str],
    confirm: bool,
    host: str | None,
    udp_port: str | None,
) -> None:
    """Write an event: TEXT, or one event per line of stdin (like logger(1)). Each frame
    carries this process's sender and seq, each event its host and pid (LOGD_ORIGIN=0:
    not those two)."""

    def run() -> None:
        from logd.logger import Logger

        found = clientenv.find_secret(WRITE_NAME)
        if found is None:
            raise ClientError(clientenv.missing_secret(WRITE_NAME))
        log = Logger(
            host=clientenv.udp_host(clientenv.http_base(host)),
            port=clientenv.udp_port(udp_port),
            write_secret=found[0],
            env=env,
            svc=svc,
            fn=fn,
        )
        write = getattr(log, lvl.lower())
        lines = [" ".join(text)] if text else _stdin_lines()
        for n, line in enumerate(lines, start=1):
            write("%s", line, **attr)
            if n % _SEND_FLUSH_EVERY == 0:
                log.flush()
        log.close()
        stats = log.stats()
        lost = stats.dropped + stats.failed
        if lost:
            raise ClientError(f"{lost} of {stats.sent + lost} events could not be sent")
        if confirm:
            _confirm(log.host, log.port, found[0], stats.sent)

    _guarded(run)


CONFIRM_TIMEOUT_S = 2.0


def _confirm(host: str, port: int, secret: str, sent: int) -> None:
    """A PING round trip after the events: a PONG signed with the write key says a logd
    is there and accepts that key (UDP itself cannot say the events arrived)."""
    from logd.client.ping import ping_once

    try:
        ping_once((host, port), secret.encode(), CONFIRM_TIMEOUT_S)
    except ClientError as err:
        what = "the event was" if sent == 1 else f"{sent} events were"
        raise ClientError(
            f"{what} sent, but no logd confirmed receiving them: {err} (--no-confirm skips "
            "this check)"
        ) from None


def _stdin_lines() -> Iterator[str]:
    for raw in sys.stdin:
        line = raw.rstrip("\r\n")
        if line.strip():
            yield line


# --- query ------------------------------------------------------------------------


@click.command()
@_filter_options(query=True)
@_output_option("text", "json", "ndjson")
@click.option("--json", "fmt", flag_value="json", help="-o json: a JSON array, newest first.")
@click.option("--ndjson", "fmt", flag_value="ndjson", help="-o ndjson: one object per line.")
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Then follow new matching events as they arrive, like tail (Ctrl-C stops).",
)
@color_option
@host_option
def query(fmt: str | None, follow: bool, color: str, host: str | None, **filters: Any) -> None:
    """Print stored events; human output is oldest first, ending with the newest."""
    fmt = None if fmt == "text" else fmt

    def run() -> None:
        import json

        client = _read_client(host)
        params = _params(filters)
        if follow:
            _query_then_follow(client, params, fmt, use_color(color, sys.stdout))
            return
        limit = filters.get("limit")
        if limit and limit.isdigit() and int(limit) > PAGE:
            events, marker = _pages(client, params, int(limit))
            if fmt == "json":
                click.echo(json.dumps(events, ensure_ascii=False))
                return
            if fmt == "ndjson":
                for event in events:
                    click.echo(json.dumps(event, ensure_ascii=False))
                return
        else:
            body = client.query(params, ndjson=fmt == "ndjson")
            if fmt:
                out = body.decode("utf-8", "replace")
                click.echo(out if out.endswith("\n") else out + "\n", nl=False)
                return
            events = json.loads(body)
            marker = events.pop() if events and "truncated" in events[-1] else None
        paint = use_color(color, sys.stdout)
        for event in reversed(events):
            click.echo(format_event(event, color=paint), color=paint)
        if marker is not None:
            click.echo(format_truncated(marker), err=True)

    _guarded(run)


PAGE = 10_000  # events per request past a server's default cap on `limit`
_NOT_FOLLOWED = ("until", "offset")  # a follow goes on from now: no end, nothing skipped


def _query_then_follow(client: ReadClient, params: Params, fmt: str | None, paint: bool) -> None:
    """`query -f`: the matching events oldest first, then those after the newest shown
    (GET /tail with after=), in one stream of lines; JSON as one object per line."""
    import json

    given = [name for name in _NOT_FOLLOWED if any(k == name for k, _ in params)]
    if given:
        raise ClientError(f"--follow goes on from now: it cannot be used with --{given[0]}")
    if fmt == "json":
        raise ClientError("--follow writes one event per line: use -o ndjson (or -o text)")
    limit = next((v for k, v in params if k == "limit"), "")
    if limit.isdigit() and int(limit) > PAGE:
        events, marker = _pages(client, params, int(limit))
    else:
        events = json.loads(client.query(params))
        marker = events.pop() if events and "truncated" in events[-1] else None
    show = _shower(as_json=fmt is not None, paint=paint)
    for event in reversed(events):
        show(event)
    if marker is not None:
        click.echo(format_truncated(marker), err=True)
    rest = [(k, v) for k, v in params if k not in ("limit", "since")]
    start = [("after", str(events[0]["id"]))] if events else [("n", "0")]
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a follow ends
        _follow(client, rest + start, show)


def _pages(client: ReadClient, params: Params, limit: int) -> tuple[list[Any], Any]:
    """Up to `limit` events, newest first, a page at a time: each page asks for the events
    before the last one it got (`before=`), so new writes do not shift the pages. Progress
    goes to stderr on a terminal. The marker is that of a page that made no progress."""
    import json

    events: list[Any] = []
    show = sys.stderr.isatty()
    rest = [(k, v) for k, v in params if k != "limit"]
    stuck = None
    while len(events) < limit:
        want = min(PAGE, limit - len(events))
        before = [("before", str(events[-1]["id"]))] if events else []
        page = json.loads(client.query([*rest, ("limit", str(want)), *before]))
        marker = page.pop() if page and "truncated" in page[-1] else None
        events += page
        if show:
            click.echo(f"\rlogd: {len(events):,} of {limit:,} events", err=True, nl=False)
        if not page:
            stuck = marker
            break
        if len(page) < want and marker is None:
            break  # nothing older matches
    if show:
        click.echo(err=True)
    return events, stuck


# --- tail -------------------------------------------------------------------------


TAIL_BACKLOG = 10  # events `logd tail` shows first, as `tail -f` does lines
GAP_NOTE = "logd: some events were lost here: the server no longer held them"


@click.command()
@_filter_options(query=False)
@click.option(
    "-n",
    "--lines",
    "lines",
    metavar="N",
    type=click.IntRange(0, 10_000),
    help=f"Show the newest N matching events first [default: {TAIL_BACKLOG}, or all since "
    "--since; 0: only new ones].",
)
@_output_option("text", "json", "ndjson")
@click.option("--json", "--ndjson", "fmt", flag_value="ndjson", help="-o ndjson.")
@color_option
@host_option
def tail(fmt: str | None, lines: int | None, color: str, host: str | None, **filters: Any) -> None:
    """Show recent events, then follow new ones as they arrive, like `tail -f`. Reconnects
    if the server restarts or the network drops, resuming after the last event shown (what
    was sent meanwhile is not missed while the server holds it). -o json and -o ndjson
    both write one JSON object per line. Ctrl-C stops."""

    def run() -> None:
        client = _read_client(host)
        show = _shower(as_json=fmt in ("json", "ndjson"), paint=use_color(color, sys.stdout))
        params = _params(filters)
        backlog = lines if lines is not None else (None if filters.get("since") else TAIL_BACKLOG)
        if backlog is not None:
            params.append(("n", str(backlog)))
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a tail ends
            _follow(client, params, show)

    _guarded(run)


def _shower(*, as_json: bool, paint: bool) -> Callable[[dict[str, Any]], None]:
    """How a stream's items are shown: events as lines (or JSON), notes on stderr."""
    import json

    def show(item: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(item, ensure_ascii=False))
        elif "dropped" in item and "t" not in item:
            click.echo(format_dropped(int(item["dropped"])), err=True)
        elif item.get("gap") is True and "t" not in item:
            click.echo(GAP_NOTE, err=True)
        else:
            click.echo(format_event(item, color=paint), color=paint)
        sys.stdout.flush()

    return show


def _follow(client: ReadClient, params: Params, show: Callable[[dict[str, Any]], None]) -> None:
    """Stream events to `show`; after a first good connection, reconnect with backoff
    (jittered, doubling up to 5 s) whenever the stream breaks, asking for the events
    after the last one shown (`after=`) instead of the first backlog."""
    from logd.client.readclient import Disconnected

    connected_once = outage = False
    delay = _BACKOFF_FIRST_S
    last_id: str | None = None
    while True:
        if last_id is None:
            asked = params
        else:
            asked = [(k, v) for k, v in params if k != "n"]
            asked.append(("after", last_id))
        stream = client.tail(asked)
        try:
            next(stream)  # connects, or raises
            if outage:
                click.echo(f"logd: reconnected to {client.base}", err=True)
            connected_once, outage, delay = True, False, _BACKOFF_FIRST_S
            for item in stream:
                if isinstance(item.get("id"), str):
                    last_id = item["id"]
                show(item)
        except Disconnected as err:
            if not connected_once:
                raise
            if not outage:  # one line per outage, not one per attempt
                click.echo(f"logd: {err}; reconnecting", err=True)
                outage = True
            time.sleep(delay * random.uniform(0.75, 1.0))  # noqa: S311  # jitter, not crypto
            delay = min(delay * 2, _BACKOFF_MAX_S)
        finally:
            stream.close()


# --- hits -------------------------------------------------------------------------


@click.command()
@_filter_options(query=False)
@click.option("--until", metavar="WHEN", callback=_when, help=f"Up to then: {_WHEN_HELP}")
@click.option(
    "--step", metavar="DURATION", help="Bucket width: 30s, 1m, 1h [default: at most 300 buckets]."
)
@click.option("--by", metavar="FIELD", help="Split by lvl, env, svc, fn, host or attr.KEY.")
@_output_option("text", "json")
@click.option("--json", "fmt", flag_value="json", help="-o json: the raw /hits JSON.")
@color_option
@host_option
def hits(
    step: str | None,
    by: str | None,
    fmt: str | None,
    color: str,
    host: str | None,
    **filters: Any,
) -> None:
    """Count matching events over time and draw them as bars, oldest first."""

    def run() -> None:
        import json
        import shutil

        client = _read_client(host)
        params = _params(filters) + [(k, v) for k, v in (("step", step), ("by", by)) if v]
        body = client.hits(params)
        if fmt == "json":
            click.echo(json.dumps(body, ensure_ascii=False))
            return
        paint = use_color(color, sys.stdout)
        width = shutil.get_terminal_size((80, 24)).columns
        for line in format_hits(body, color=paint, width=width):
            click.echo(line, color=paint)

    _guarded(run)


# --- ping -------------------------------------------------------------------------


@click.command()
@click.option(
    "--key",
    "role",
    type=click.Choice(["write", "read"]),
    default="write",
    show_default=True,
    help="Which secret signs the PING.",
)
@click.option(
    "--timeout", type=click.FloatRange(0.01, 60), default=2.0, show_default=True, help="Seconds."
)
@host_option
@udp_port_option
def ping(role: str, timeout: float, host: str | None, udp_port: str | None) -> None:
    """Send a signed PING over UDP and wait for a PONG signed with the same key."""

    def run() -> None:
        from logd.client.ping import ping_once

        name = WRITE_NAME if role == "write" else READ_NAME
        found = clientenv.find_secret(name)
        if found is None:
            raise ClientError(clientenv.missing_secret(name))
        target = (clientenv.udp_host(clientenv.http_base(host)), clientenv.udp_port(udp_port))
        rtt, key_id = ping_once(target, found[0].encode(), timeout)
        click.echo(
            f"PONG from {clean(target[0])}:{target[1]} in {rtt * 1000:.2f} ms "
            f"({role} key {key_id.hex()})"
        )

    _guarded(run)


# --- info -------------------------------------------------------------------------


@click.command()
@_output_option("text", "json")
@click.option("--json", "fmt", flag_value="json", help="-o json: the raw /info JSON.")
@host_option
def info(fmt: str | None, host: str | None) -> None:
    """Show the server's status (no secret needed)."""

    def run() -> None:
        import json

        from logd.client.readclient import ReadClient

        status = ReadClient(clientenv.http_base(host)).info()
        click.echo(json.dumps(status, indent=2) if fmt == "json" else format_info(status))

    _guarded(run)


# --- alerts -----------------------------------------------------------------------


@click.command()
@click.option("--json", "as_json", is_flag=True, help="The raw /alerts JSON.")
@host_option
def alerts(as_json: bool, host: str | None) -> None:
    """Show the alert rules: state, count in the window, when each last fired."""

    def run() -> None:
        import json

        body = _read_client(host).alerts()
        click.echo(json.dumps(body, indent=2) if as_json else format_alerts(body))

    _guarded(run)


COMMANDS = (send, query, tail, hits, ping, info, alerts)
