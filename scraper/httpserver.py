"""The scraper's own HTTP server: ``/metrics``, the ``/targets`` page, health and readiness, self-profiling.

It runs in a background thread (a greenlet under gevent's monkey-patching) of the process
that starts it; see :func:`start_http_server`.
"""

from __future__ import annotations

import html
import logging
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import groupby
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import redis

from . import metrics, profile_view
from .concurrency import Offload, in_place
from .config import Config
from .status import TargetHealth, TargetStatus, read_statuses
from .status_view import InstanceStatus, format_age, format_duration, format_labels, group_instances, health_summary

logger = logging.getLogger(__name__)

ReadyCheck = Callable[[], tuple[bool, str]]

_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"

class ScraperHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows how to reach Redis and whether the process is ready."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        redis_factory: Callable[[], redis.Redis] | None,
        ready: ReadyCheck | None,
        config: Callable[[], Config | None] | None = None,
        pages: Offload = in_place,
    ) -> None:
        self._config = config
        self.pages = pages
        self._library: profile_view.ProfileLibrary | None = None
        self._redis_factory = redis_factory
        self._redis: redis.Redis | None = None
        self._redis_lock = threading.Lock()
        self.ready = ready
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A scraper that gives up on a long CPU profile resets its connection: routine, not a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            logger.debug("client %s went away", client_address)
            return
        super().handle_error(request, client_address)

    @property
    def has_redis(self) -> bool:
        return self._redis_factory is not None

    def library(self) -> profile_view.ProfileLibrary | None:
        """The file stores of the config in force (rebuilt when it changes); None without a config."""
        if self._config is None:
            return None
        config = self._config()
        if config is None:
            return None
        if self._library is None or self._library.config is not config:
            self._library = profile_view.ProfileLibrary(config)
        return self._library

    def redis(self) -> redis.Redis:
        """One client for all requests, made on first use (a client is thread-safe; making one per request is not free)."""
        assert self._redis_factory is not None
        with self._redis_lock:
            if self._redis is None:
                self._redis = self._redis_factory()
            return self._redis


def start_http_server(
    port: int,
    *,
    redis_factory: Callable[[], redis.Redis] | None,
    ready: ReadyCheck | None = None,
    host: str = "127.0.0.1",
    config: Callable[[], Config | None] | None = None,
    pages: Offload = in_place,
) -> tuple[ScraperHTTPServer, int]:
    """Serve on ``host:port`` (0 picks a free port; an IPv6 ``host`` such as ``::`` works too) from a
    daemon thread; return the server and its port.

    ``config`` returns the config in force; with it, /targets links each target to its stored
    profiles and /profile shows them, rendered by ``pages`` (a 1 MB profile's page is ~0.5 s of CPU: a
    worker renders it in a thread of its own, so that its hub keeps moving). Stop it with ``server.shutdown(); server.server_close()``.
    """
    server_class = type("ScraperHTTPServer6", (ScraperHTTPServer,), {"address_family": socket.AF_INET6}) \
        if ":" in host else ScraperHTTPServer
    server = server_class((host, port), redis_factory, ready, config, pages)
    thread = threading.Thread(target=server.serve_forever, name="pprof-scraper-http", daemon=True)
    thread.start()
    return server, server.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    server: ScraperHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            if url.path == "/":
                self._send(200, _INDEX.encode(), _HTML)
            elif url.path == "/metrics":
                self._metrics()
            elif url.path == "/targets":
                self._targets(query)
            elif url.path == "/-/healthy":
                self._send(200, b"OK\n", _TEXT)
            elif url.path == "/-/ready":
                self._ready()
            elif url.path.startswith(("/profile", "/static/")):
                self._send(*self.server.pages(profile_view.handle, url.path, query, self.server.library()))
            elif url.path == "/debug/pprof" or url.path.startswith("/debug/pprof/"):
                self._pprof(url.path, query)
            else:
                self._send(404, b"not found; see / for what this server serves\n", _TEXT)
        except (ConnectionError, TimeoutError):
            raise  # the client went away (a scraper stopping mid-profile): handle_error keeps it quiet
        except Exception:
            logger.exception("internal error serving %s", url.path)
            self._send(500, b"internal error; see the server's log\n", _TEXT)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        # The request line and status only: never headers.
        logger.debug(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _metrics(self) -> None:
        body, content_type = metrics.exposition(self.server.redis if self.server.has_redis else None)
        self._send(200, body, content_type)

    def _ready(self) -> None:
        if self.server.ready is not None:
            ok, reason = self.server.ready()
            if not ok:
                self._send(503, f"not ready: {reason}\n".encode(), _TEXT)
                return
        if self.server.has_redis:
            try:
                self.server.redis().ping()
            except redis.RedisError as exc:
                self._send(503, f"not ready: Redis does not answer PING: {exc}\n".encode(), _TEXT)
                return
        self._send(200, b"ready\n", _TEXT)

    def _targets(self, query: dict[str, list[str]]) -> None:
        if not self.server.has_redis:
            self._send(503, b"no Redis configured: target status is kept in Redis\n", _TEXT)
            return
        job = query.get("job", [None])[0]
        health = None
        if query.get("health"):
            try:
                health = TargetHealth(query["health"][0])
            except ValueError:
                choices = ", ".join(h.value for h in TargetHealth)
                self._send(400, f"unknown health {query['health'][0]!r}; use one of {choices}\n".encode(), _TEXT)
                return
        try:
            page_number = max(1, int(query.get("page", ["1"])[0]))
            refresh_s = max(0, int(query.get("refresh", [str(REFRESH_S)])[0]))
        except ValueError:
            self._send(400, b"page and refresh take whole numbers\n", _TEXT)
            return
        try:
            statuses = read_statuses(self.server.redis())
        except redis.RedisError as exc:
            self._send(503, f"cannot read target status: Redis does not answer: {exc}\n".encode(), _TEXT)
            return
        library = self.server.library()
        links = (lambda labels: profile_view.profile_links(library, labels)) if library is not None else None
        page = render_targets_page(statuses, job=job, health=health, text=query.get("q", [""])[0].strip(),
                                   page=page_number, refresh_s=refresh_s, now=time.time(), links=links)
        self._send(200, page.encode(), _HTML)

    def _pprof(self, path: str, query: dict[str, list[str]]) -> None:
        # Imported on first use: nothing else of this server needs it.
        from .selfprofile import handle_pprof

        status, headers, body = handle_pprof(path, query)
        headers = dict(headers)
        headers.pop("Content-Length", None)  # _send sets it from the body
        content_type = headers.pop("Content-Type", "application/octet-stream")
        self._send(status, body, content_type, headers)


_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #1d2125; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
h2 .counts { font-weight: normal; color: #5c6670; font-size: .85em; margin-left: .6em; }
.summary { color: #5c6670; margin-bottom: .8em; }
form { margin: .6em 0 1em; }
form label { margin-right: 1em; }
table { border-collapse: collapse; width: 100%; }
th { text-align: left; font-weight: 600; color: #5c6670; border-bottom: 2px solid #d5dbe0; padding: .35em .5em;
     white-space: nowrap; }
td { padding: .35em .5em; border-top: 1px solid #e6eaee; vertical-align: top; }
tr.error-row td { border-top: none; padding-top: 0; }
tr.down td { background: #fff4f4; }
.badge { display: inline-block; min-width: 4.5em; text-align: center; border-radius: 3px; padding: .1em .4em;
         font-weight: 600; font-size: .85em; color: #fff; text-transform: uppercase; }
.badge.up { background: #2e8540; } .badge.down { background: #c62828; } .badge.unknown { background: #8a939b; }
.label { display: inline-block; background: #eef1f4; border-radius: 3px; padding: 0 .35em; margin: 0 .25em .2em 0;
         font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.url, .worker { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all; }
.num { text-align: right; white-space: nowrap; }
.error { margin: 0; padding: .4em .6em; background: #fdeaea; border-left: 3px solid #c62828; color: #8e1c1c;
         white-space: pre-wrap; word-break: break-word; font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.muted { color: #8a939b; }
.stored { font-size: .85em; white-space: nowrap; }
.type { display: inline-block; white-space: nowrap; border-left: 3px solid #8a939b; padding: 0 .4em; margin: 0 .3em .2em 0;
        font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.type.up { border-color: #2e8540; } .type.down { border-color: #c62828; background: #fdeaea; }
.pager { margin: .6em 0; }
input { font: inherit; }
"""

_INDEX = """<!doctype html>
<html><head><meta charset="utf-8"><title>pprof-scraper</title></head>
<body style="font: 14px system-ui, sans-serif; margin: 2em">
<h1>pprof-scraper</h1>
<ul>
<li><a href="/targets">/targets</a>: how the last scrape of every target went</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics of this host's processes</li>
<li><a href="/-/healthy">/-/healthy</a> and <a href="/-/ready">/-/ready</a>: liveness and readiness</li>
<li><a href="/debug/pprof/">/debug/pprof/</a>: profiles of this process</li>
<li>/profile: stored profiles as flame graphs (linked from each target on /targets)</li>
</ul>
</body></html>
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


#: Instances on one page of /targets: a page stays small (and quick to reload) at 10,000 targets.
PAGE_SIZE = 100
#: Seconds between reloads of /targets; ``?refresh=0`` stops them.
REFRESH_S = 30


def render_targets_page(
    statuses: list[TargetStatus],
    *,
    job: str | None = None,
    health: TargetHealth | None = None,
    text: str = "",
    page: int = 1,
    refresh_s: int = REFRESH_S,
    now: float,
    links: Callable[[dict[str, str]], str] | None = None,
) -> str:
    """The ``/targets`` page: a filter form, then one table per job of one row per instance (down
    first), a cell per profile type, and each distinct error once under its instance.

    ``statuses`` are all of them, in :func:`~scraper.status.read_statuses` order; the form offers
    every job while the tables show the instances selected by ``job``, ``health`` (of the instance:
    down when any type is) and ``text`` (a substring of its instance or labels), ``PAGE_SIZE`` at a time.
    ``links`` makes the HTML that links a target's type to its stored profiles.
    """
    instances = group_instances(statuses)
    jobs = sorted({i.job for i in instances})
    needle = text.lower()
    shown = [i for i in instances
             if (job is None or i.job == job) and (health is None or i.health == health)
             and (not needle or any(needle in f"{k}={v}".lower() for k, v in i.labels.items()))]
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(page, pages)
    on_page = shown[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    job_options = "".join(
        f'<option value="{_e(j)}"{" selected" if j == job else ""}>{_e(j)}</option>' for j in jobs
    )
    health_options = "".join(
        f'<option value="{h.value}"{" selected" if h == health else ""}>{h.value}</option>' for h in TargetHealth
    )
    here = {k: v for k, v in (("job", job), ("health", health.value if health else None), ("q", text or None),
                              ("refresh", None if refresh_s == REFRESH_S else str(refresh_s))) if v is not None}

    def link(**changes: object) -> str:
        return "/targets?" + urlencode({**here, **{k: str(v) for k, v in changes.items()}})

    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    refresh_link = (f'reloads every {refresh_s}s · <a href="{_e(link(refresh=0))}">stop</a>' if refresh_s
                    else f'<a href="{_e(link(refresh=REFRESH_S))}">reload every {REFRESH_S}s</a>')
    parts = [
        f'<!doctype html><html><head><meta charset="utf-8">{refresh}<title>pprof-scraper: targets</title>',
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Targets</h1>",
        f'<div class="summary">{_e(health_summary(instances))} ({len(statuses)} profile types) · as of '
        f'{_e(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now)))} · {refresh_link}</div>',
        '<form method="get" action="/targets">',
        f'<label>job <select name="job"><option value="">all</option>{job_options}</select></label>',
        f'<label>health <select name="health"><option value="">all</option>{health_options}</select></label>',
        f'<label>labels <input name="q" value="{_e(text)}" placeholder="instance or label"></label>',
        '<button type="submit">show</button>',
        ' <a href="/targets?health=down">only down</a> · <a href="/targets">all</a>',
        "</form>",
    ]
    if not shown:
        parts.append('<p class="muted">No targets match. Beat registers targets when it plans the config.</p>')
    else:
        parts.append(_pager(page, pages, len(shown), link))
    for job_name, group in groupby(on_page, key=lambda i: i.job):
        parts.append(_job_section(job_name, list(group), now, links))
    if pages > 1:
        parts.append(_pager(page, pages, len(shown), link))
    parts.append("</body></html>")
    return "\n".join(parts)


def _pager(page: int, pages: int, count: int, link: Callable[..., str]) -> str:
    first = (page - 1) * PAGE_SIZE + 1
    text = f"instances {first}–{min(count, page * PAGE_SIZE)} of {count}"
    if pages == 1:
        return f'<div class="pager muted">{_e(text)}</div>'
    previous = f'<a href="{_e(link(page=page - 1))}">← previous</a>' if page > 1 else ""
    following = f'<a href="{_e(link(page=page + 1))}">next →</a>' if page < pages else ""
    return f'<div class="pager">{previous} {_e(text)} (page {page} of {pages}) {following}</div>'


def _job_section(job: str, instances: list[InstanceStatus], now: float,
                 links: Callable[[dict[str, str]], str] | None) -> str:
    counts = Counter(i.health for i in instances)
    count_text = " · ".join(f"{counts[h]} {h.value}" for h in TargetHealth if counts[h])
    link = "/targets?" + urlencode({"job": job})
    rows = [
        f'<h2 id="job-{_e(job)}"><a href="{_e(link)}">{_e(job)}</a><span class="counts">{_e(count_text)}</span></h2>',
        "<table><thead><tr><th>health</th><th>instance</th><th>labels</th><th>profile types</th>"
        "<th>last scrape</th></tr></thead><tbody>",
    ]
    for instance in instances:
        rows.append(_instance_rows(instance, now, links))
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _instance_rows(instance: InstanceStatus, now: float, links: Callable[[dict[str, str]], str] | None) -> str:
    health = instance.health.value
    labels = "".join(f'<span class="label">{_e(text)}</span>' for text in
                     format_labels({k: v for k, v in instance.labels.items() if k != "instance"}))
    cells = "".join(_type_cell(s, now, links) for s in instance.types)
    when = ""
    if instance.last_scrape is not None:
        when = _e(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(instance.last_scrape)))
    row = (
        f'<tr class="{health}">'
        f'<td><span class="badge {health}">{health}</span></td>'
        f'<td class="url">{_e(instance.instance)}</td><td>{labels}</td><td>{cells}</td>'
        f'<td title="{when}">{_e(format_age(instance.last_scrape, now))}</td></tr>'
    )
    errors = instance.errors()
    if not errors:
        return row
    last_success = max((s.last_success for s in instance.types if s.last_success is not None), default=None)
    since = f"last success {format_age(last_success, now)}" if last_success is not None else "never succeeded"
    blocks = "".join(f'<pre class="error">{_e(", ".join(types))}: {_e(error)}</pre>' for types, error in errors)
    return row + (f'<tr class="{health} error-row"><td></td><td colspan="4">{blocks}'
                  f'<span class="muted">{_e(since)}</span></td></tr>')


def _type_cell(s: TargetStatus, now: float, links: Callable[[dict[str, str]], str] | None = None) -> str:
    """One profile type of one instance: its health, how long its last scrape took, its counts and
    worker (on hover), its URL as a link. The place for more per-(instance, type) detail."""
    name = s.labels.get("__name__", s.profile_type)
    title = (f"{s.url}\n{s.successes} ok / {s.failures} failed · last {format_age(s.last_scrape, now)}"
             + (f" on {s.worker}" if s.worker else "") + (f'\nstored as __name__="{name}"' if name != s.profile_type else ""))
    took = format_duration(s.last_scrape_duration)
    # Only http(s) URLs become links: a label-made scheme must not become a javascript: link.
    label = _e(s.profile_type)
    if s.url.startswith(("http://", "https://")):
        label = f'<a href="{_e(s.url)}">{label}</a>'
    cell = (f'<span class="type {s.health.value}" title="{_e(title)}">{label}'
            + (f' <span class="muted">{_e(took)}</span>' if took else ""))
    if links is not None and (stored := links(s.labels)):
        cell += f' <span class="stored">{stored}</span>'
    if s.delta_note:
        cell += f'<br><span class="muted">{_e(s.delta_note)}</span>'
    return cell + "</span>"
