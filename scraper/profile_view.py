"""The profile pages: a stored profile as a flame graph and a top table, a diff of two, a series' history.

Served read-only by :mod:`scraper.httpserver` under ``/profile``; the model is :mod:`scraper.flame`
and the drawing ``scraper/web/flame.js``. Only files under a configured file store are ever read:
a path from a URL is resolved and must stay inside the store's directory.
"""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote, urlencode

from . import flame
from .config import Config, FileReceiverConfig, PyroscopeReceiverConfig
from .receivers.filestore import path_component

#: frames under this share of the total are left out of the page (invisible at any screen width)
MIN_SHARE = 0.0001
#: rows of the top table
TOP_ROWS = 100
#: profiles a history page lists
HISTORY = 100

_HTML = "text/html; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"

# Pyroscope names a profile type <__name__>:<sample type>:<unit>:<period type>:<unit>; the UI opens a
# series at /?query=<type>{<labels>}. The sample and period types Go's profiles of each built-in
# __name__ carry (the first Pyroscope shows for them):
_PYROSCOPE_SAMPLE = {
    "process_cpu": "cpu:nanoseconds:cpu:nanoseconds",
    "memory": "alloc_space:bytes:space:bytes",
    "goroutine": "goroutine:count:goroutine:count",
    "mutex": "delay:nanoseconds:contentions:count",
    "block": "delay:nanoseconds:contentions:count",
}


class NotFound(Exception):
    """What was asked for is not a stored profile this server may show; the message says why."""


Answer = tuple[int, bytes, str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class StoredProfile:
    """One profile of a file store: its path relative to the store, and what its name says."""

    store: str
    path: str
    when: datetime
    size: int


class ProfileLibrary:
    """The file stores of a config, and the receivers each job forwards to."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.stores = {
            name: Path(r.path).resolve() for name, r in config.write.items() if isinstance(r, FileReceiverConfig)
        }

    def file_stores_of(self, job: str) -> list[str]:
        return [name for name in self._forward_to(job) if name in self.stores]

    def pyroscopes_of(self, job: str) -> list[PyroscopeReceiverConfig]:
        return [r for name in self._forward_to(job)
                if isinstance(r := self.config.write.get(name), PyroscopeReceiverConfig)]

    def _forward_to(self, job: str) -> list[str]:
        for key, scrape in self.config.scrape.items():
            if (scrape.job_name or key) == job:
                return list(scrape.forward_to)
        return []

    def resolve(self, store: str, relative: str) -> Path:
        """The file ``relative`` names in ``store``; NotFound unless it is a stored profile inside it."""
        root = self.stores.get(store)
        if root is None:
            raise NotFound(f"no file store named {store!r} in this config")
        path = (root / relative).resolve()
        if not path.is_relative_to(root) or not path.name.endswith(".pb.gz") or not path.is_file():
            raise NotFound(f"no stored profile {relative!r} in file store {store!r}")
        return path

    def series(self, store: str, job: str, name: str, instance: str, limit: int = HISTORY) -> list[StoredProfile]:
        """The newest ``limit`` profiles of one series (job, type, instance), newest first."""
        root = self.stores.get(store)
        if root is None:
            raise NotFound(f"no file store named {store!r} in this config")
        base = root / path_component(job) / path_component(name)
        marker = f"-{path_component(instance)}-"
        found: list[StoredProfile] = []
        for day in _days_newest_first(base):
            names = sorted((f for f in os.listdir(day) if f.endswith(".json") and f[6:6 + len(marker)] == marker),
                           reverse=True)
            for sidecar in names:
                profile = day / (sidecar.removesuffix(".json") + ".pb.gz")
                try:
                    size = profile.stat().st_size
                except FileNotFoundError:
                    continue
                parts = day.relative_to(base).parts
                when = datetime.strptime("".join(parts) + sidecar[:6], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
                found.append(StoredProfile(store, str(profile.relative_to(root)), when, size))
                if len(found) >= limit:
                    return found
        return found


def _days_newest_first(base: Path) -> list[Path]:
    """The ``YYYY/MM/DD`` directories under ``base``, newest first."""
    days: list[Path] = []
    for year in _subdirs(base):
        for month in _subdirs(year):
            days.extend(_subdirs(month))
    return days


def _subdirs(directory: Path) -> list[Path]:
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    return [directory / e for e in sorted(entries, reverse=True) if e.isdigit()]


@lru_cache(maxsize=8)
def _parsed(path: Path, mtime_ns: int, size: int) -> flame.Profile:
    """Stored profiles never change: one parse serves every sample type and diff of a file."""
    return flame.parse(path.read_bytes())


def _load(path: Path) -> flame.Profile:
    st = path.stat()
    return _parsed(path, st.st_mtime_ns, st.st_size)


# --------------------------------------------------------------------------- links for /targets


def profile_links(library: ProfileLibrary, labels: dict[str, str]) -> str:
    """HTML links for one target's type on /targets: its latest stored profile and history in each
    file store the job forwards to, else its series in each Pyroscope it pushes to."""
    job, name, instance = labels.get("job", ""), labels.get("__name__", ""), labels.get("instance", "")
    links = []
    for store in library.file_stores_of(job):
        series = urlencode({"store": store, "job": job, "name": name, "instance": instance})
        prefix = f"{_e(store)}: " if len(library.stores) > 1 else ""
        links.append(f'{prefix}<a href="/profile/latest?{_e(series)}">latest</a> · '
                     f'<a href="/profile/history?{_e(series)}">history</a>')
    if not links:
        for receiver in library.pyroscopes_of(job):
            url = pyroscope_url(receiver.url, {**labels, **receiver.external_labels})
            links.append(f'<a href="{_e(url)}">in Pyroscope</a>')
    return "<br>".join(links)


def pyroscope_url(base: str, labels: dict[str, str]) -> str:
    """The series with these labels in Pyroscope's UI, over the last hour."""
    name = labels.get("__name__", "")
    selector = ",".join(f'{k}="{_label_value(labels[k])}"' for k in ("service_name", "instance") if k in labels)
    profile_type = f"{name}:{_PYROSCOPE_SAMPLE[name]}" if name in _PYROSCOPE_SAMPLE else name
    query = profile_type + "{" + selector + "}"
    return base.rstrip("/") + "/?" + urlencode({"query": query, "from": "now-1h", "until": "now"}, quote_via=quote)


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------- requests


def handle(path: str, query: dict[str, list[str]], library: ProfileLibrary | None) -> Answer:
    """Answer a GET of ``/profile…`` or ``/static/…``: status, body, content type, extra headers."""
    if path.startswith("/static/"):
        return _static(path.removeprefix("/static/"))
    if library is None:
        return 404, b"no config here: the profile pages need the config that names the file stores\n", _TEXT, {}
    one = {k: v[0] for k, v in query.items() if v}
    try:
        if path == "/profile":
            return 200, _profile_page(library, one).encode(), _HTML, {}
        if path == "/profile/diff":
            return 200, _diff_page(library, one).encode(), _HTML, {}
        if path == "/profile/history":
            return 200, _history_page(library, one).encode(), _HTML, {}
        if path == "/profile/latest":
            latest = library.series(one.get("store", ""), one.get("job", ""), one.get("name", ""),
                                    one.get("instance", ""), limit=1)
            if not latest:
                raise NotFound("no stored profile of this series yet")
            return 302, b"", _TEXT, {"Location": "/profile?" + urlencode({"store": latest[0].store,
                                                                          "path": latest[0].path})}
        if path == "/profile/raw":
            file = library.resolve(one.get("store", ""), one.get("path", ""))
            return 200, file.read_bytes(), "application/octet-stream", {
                "Content-Disposition": f'attachment; filename="{file.name}"'}
    except NotFound as exc:
        return 404, _page("Not found", f'<p class="error">{_e(exc)}</p>'
                                 '<p><a href="/targets">back to the targets</a></p>').encode(), _HTML, {}
    except (flame.ProfileUnreadable, KeyError) as exc:
        return 400, _page("Cannot show this profile", f'<p class="error">{_e(exc.args[0])}</p>').encode(), _HTML, {}
    return 404, b"not found; see / for what this server serves\n", _TEXT, {}


_WEB = Path(__file__).parent / "web"
_STATIC = {"flame.js": "application/javascript; charset=utf-8"}


def _static(name: str) -> Answer:
    if name not in _STATIC:
        return 404, b"not found\n", _TEXT, {}
    return 200, (_WEB / name).read_bytes(), _STATIC[name], {}


# --------------------------------------------------------------------------- pages


def _profile_page(library: ProfileLibrary, q: dict[str, str]) -> str:
    store, relative = q.get("store", ""), q.get("path", "")
    file = library.resolve(store, relative)
    profile = _load(file)
    index = profile.type_index(q.get("type") or None)
    sample_type = profile.sample_types[index]
    sidecar = _sidecar(file)
    root, hidden = flame.tree(profile, index, MIN_SHARE)
    labels = sidecar.get("labels", {})
    series = _series_query(store, labels)
    head = [
        _title_block(labels, sidecar, file),
        _type_links(profile, index, {"store": store, "path": relative}, "/profile"),
        _what_it_shows(sample_type, sidecar, profile),
        '<p class="links">'
        + (f'<a href="/profile/history?{_e(series)}">history of this series</a> · ' if series else "")
        + f'<a href="/profile/raw?{_e(urlencode({"store": store, "path": relative}))}">download</a> '
        f'(for <code>go tool pprof</code>)</p>',
    ]
    top_rows = flame.top(profile, index)
    body = "\n".join(head) + _flame_block(root, sample_type, hidden, diff=False) + _top_table(
        top_rows, root.total, sample_type.unit)
    return _page(f"{labels.get('job', '')} {labels.get('__name__', '')} {sample_type.name}", body, script=True)


def _diff_page(library: ProfileLibrary, q: dict[str, str]) -> str:
    store = q.get("store", "")
    base_file = library.resolve(store, q.get("base", ""))
    new_file = library.resolve(store, q.get("path", ""))
    base, new = _load(base_file), _load(new_file)
    index_new = new.type_index(q.get("type") or None)
    sample_type = new.sample_types[index_new]
    index_base = base.type_index(sample_type.name)
    root, hidden = flame.diff_tree(base, new, index_base, index_new, MIN_SHARE)
    base_side, new_side = _sidecar(base_file), _sidecar(new_file)
    labels = new_side.get("labels", {})
    body = "\n".join([
        f"<h1>What changed: {_e(labels.get('job', ''))} {_e(labels.get('__name__', ''))} "
        f"<span class=\"muted\">{_e(labels.get('instance', ''))}</span></h1>",
        '<table class="meta"><tr><th>before</th>'
        f"<td>{_e(base_side.get('start', base_file.name))}</td><td>{_e(flame.format_value(root.base_total, sample_type.unit))}</td>"
        f'<td><a href="/profile?{_e(urlencode({"store": store, "path": q["base"]}))}">open</a></td></tr>'
        "<tr><th>after</th>"
        f"<td>{_e(new_side.get('start', new_file.name))}</td><td>{_e(flame.format_value(root.total, sample_type.unit))}</td>"
        f'<td><a href="/profile?{_e(urlencode({"store": store, "path": q["path"]}))}">open</a></td></tr></table>',
        _type_links(new, index_new, {"store": store, "base": q["base"], "path": q["path"]}, "/profile/diff"),
        _what_it_shows(sample_type, new_side, new, diff=True),
        '<p class="muted">A frame\'s width is the mean of its shares of the two profiles; '
        '<span class="grew">red</span> took a larger share after, <span class="shrank">green</span> a smaller one '
        "(the deeper the colour, the larger the change). Hover for both values.</p>",
    ])
    body += _flame_block(root, sample_type, hidden, diff=True)
    return _page(f"diff {labels.get('job', '')} {labels.get('__name__', '')}", body, script=True)


def _history_page(library: ProfileLibrary, q: dict[str, str]) -> str:
    store, job, name, instance = (q.get(k, "") for k in ("store", "job", "name", "instance"))
    found = library.series(store, job, name, instance)
    title = f"{job} {name} {instance}"
    if not found:
        return _page(title, f"<h1>{_e(title)}</h1><p class=\"muted\">No stored profile of this series in "
                     f"file store {_e(store)} yet.</p>")
    latest = found[0]
    rows = []
    for i, p in enumerate(found):
        compare = "" if i == 0 else (
            f'<a href="/profile/diff?{_e(urlencode({"store": store, "base": p.path, "path": latest.path}))}">'
            "compare with the latest</a>")
        rows.append(
            f"<tr><td><input type=\"radio\" name=\"base\" value=\"{_e(p.path)}\"{' checked' if i == 1 else ''}></td>"
            f"<td><input type=\"radio\" name=\"path\" value=\"{_e(p.path)}\"{' checked' if i == 0 else ''}></td>"
            f'<td><a href="/profile?{_e(urlencode({"store": store, "path": p.path}))}">'
            f"{_e(p.when.strftime('%Y-%m-%d %H:%M:%S UTC'))}</a></td>"
            f'<td class="num">{_e(flame.format_value(p.size, "bytes"))}</td><td>{compare}</td></tr>')
    body = (
        f"<h1>{_e(title)}</h1><p class=\"muted\">The newest {len(found)} profiles in file store {_e(store)}. "
        "Choose two to compare (before, after), or open one.</p>"
        '<form method="get" action="/profile/diff">'
        f'<input type="hidden" name="store" value="{_e(store)}">'
        "<table><thead><tr><th>before</th><th>after</th><th>scraped</th><th class=\"num\">size</th><th></th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
        '<p><button type="submit">compare the two chosen</button></p></form>'
    )
    return _page(title, body)


def _title_block(labels: dict[str, str], sidecar: dict, file: Path) -> str:
    shown = "".join(f'<span class="label">{_e(k)}="{_e(v)}"</span>' for k, v in sorted(labels.items()))
    return (
        f"<h1>{_e(labels.get('job', file.name))} {_e(labels.get('__name__', ''))} "
        f"<span class=\"muted\">{_e(labels.get('instance', ''))}</span></h1>"
        f"<div class=\"summary\">scraped {_e(sidecar.get('start', '?'))} from "
        f"<span class=\"url\">{_e(sidecar.get('url', '?'))}</span></div><div>{shown}</div>"
    )


def _type_links(profile: flame.Profile, index: int, params: dict[str, str], path: str) -> str:
    links = []
    for i, st in enumerate(profile.sample_types):
        text = f"{_e(st.name)} <span class=\"muted\">({_e(st.unit)})</span>"
        if i == index:
            links.append(f"<strong>{text}</strong>")
        else:
            links.append(f'<a href="{path}?{_e(urlencode({**params, "type": st.name}))}">{text}</a>')
    return '<p class="types">sample type: ' + " · ".join(links) + "</p>"


def _what_it_shows(sample_type: flame.SampleType, sidecar: dict, profile: flame.Profile, diff: bool = False) -> str:
    """One sentence on the time the values cover: since process start for Go's cumulative types,
    unless the store says the profile was kept as a delta."""
    cumulative = sidecar.get("cumulative")
    if cumulative is None:
        cumulative = sample_type.cumulative and "/delta_" not in sidecar.get("url", "")
    if cumulative and diff:
        return ('<p class="note">Both profiles count <strong>since the process started</strong>: a frame\'s '
                "change (hover) is what happened between the two scrapes, if the process did not restart.</p>")
    if cumulative:
        return ('<p class="note">These values count <strong>since the process started</strong>: the file store '
                "keeps what the target served. Compare two profiles of the series to see one interval.</p>")
    if profile.duration_nanos:
        seconds = profile.duration_nanos / 1e9
        return f'<p class="note">These values cover the {seconds:.1f} s the target profiled.</p>'
    if sample_type.name.startswith("inuse_") or sample_type.name == "goroutine":
        return '<p class="note">A snapshot: what was live when the target answered.</p>'
    return ""


def _flame_block(root: flame.Frame, sample_type: flame.SampleType, hidden: int, diff: bool) -> str:
    names: dict[str, int] = {}
    tree = flame.as_json_tree(root, names, diff=diff)
    data = {"names": list(names), "tree": tree, "unit": sample_type.unit, "diff": diff}
    # "<" escaped so that no function name can close the script element
    payload = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
    note = (f'<p class="muted">{hidden} call paths under {MIN_SHARE:.2%} of the total are left out '
            "(their values stay in their callers').</p>") if hidden else ""
    return (
        '<div class="controls"><input id="flame-search" type="search" placeholder="search functions" '
        'autocomplete="off"> <span id="flame-search-result"></span></div>'
        '<div class="controls"><button id="flame-reset" type="button">reset zoom</button> '
        '<span id="flame-zoom"></span></div>'
        f'<div class="flame-box"><canvas id="flame" aria-label="icicle graph of {_e(sample_type.name)}"></canvas></div>'
        f"{note}"
        '<pre id="flame-tooltip" hidden></pre>'
        f'<script id="flame-data" type="application/json">{payload}</script>'
    )


def _top_table(rows: list[flame.TopRow], total: int, unit: str) -> str:
    out = ['<h2>Top functions <span class="muted">(like <code>go tool pprof -top</code>; '
           "click one to search for it)</span></h2>",
           '<table class="top"><thead><tr><th class="num">flat</th><th class="num">flat%</th>'
           '<th class="num">sum%</th><th class="num">cum</th><th class="num">cum%</th><th>function</th></tr>'
           "</thead><tbody>"]
    running = 0
    for row in rows[:TOP_ROWS]:
        running += row.flat
        out.append(
            f'<tr><td class="num">{_e(flame.format_value(row.flat, unit))}</td><td class="num">{_pct(row.flat, total)}</td>'
            f'<td class="num">{_pct(running, total)}</td><td class="num">{_e(flame.format_value(row.cum, unit))}</td>'
            f'<td class="num">{_pct(row.cum, total)}</td>'
            f'<td class="fn" data-function="{_e(row.name)}">{_e(row.name)}</td></tr>')
    out.append("</tbody></table>")
    if len(rows) > TOP_ROWS:
        out.append(f'<p class="muted">{TOP_ROWS} of {len(rows)} functions shown; '
                   "<code>pprof-scraper top FILE -n N</code> prints more.</p>")
    return "".join(out)


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def _sidecar(file: Path) -> dict:
    try:
        return json.loads(file.with_name(file.name.removesuffix(".pb.gz") + ".json").read_text())
    except (OSError, ValueError):
        return {}


def _series_query(store: str, labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return urlencode({"store": store, "job": labels.get("job", ""), "name": labels.get("__name__", ""),
                      "instance": labels.get("instance", "")})


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


_STYLE = """
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.2em 2em; color: #1d2125; }
h1 { font-size: 1.4em; margin: 0 0 .2em; } h2 { font-size: 1.15em; margin: 1.4em 0 .4em; }
.muted { color: #5c6670; font-weight: normal; } .summary { color: #5c6670; }
.label { display: inline-block; background: #eef1f4; border-radius: 3px; padding: 0 .35em; margin: .2em .25em .2em 0;
         font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
.url, code, .fn { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; word-break: break-all; }
.note { background: #fff8e1; border-left: 3px solid #f0b400; padding: .3em .6em; }
.error { background: #fdeaea; border-left: 3px solid #c62828; padding: .4em .6em; color: #8e1c1c; }
.controls { margin: .4em 0; } #flame-search { width: 22em; padding: .2em .4em; }
#flame-search-result { margin-left: .6em; font-weight: 600; }
.flame-box { width: 100%; overflow: hidden; border: 1px solid #e6eaee; }
canvas#flame { display: block; cursor: pointer; }
#flame-tooltip { position: absolute; margin: 0; padding: .35em .5em; background: #1d2125; color: #fff; border-radius: 3px;
                 font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; pointer-events: none; max-width: 60em;
                 white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; } th { text-align: left; color: #5c6670; padding: .25em .5em; }
td { padding: .2em .5em; border-top: 1px solid #e6eaee; } .num { text-align: right; white-space: nowrap; }
table.top td.fn { cursor: pointer; } table.top td.fn:hover { text-decoration: underline; }
.grew { color: #c62828; font-weight: 600; } .shrank { color: #2e8540; font-weight: 600; }
"""


def _page(title: str, body: str, script: bool = False) -> str:
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>pprof-scraper: {_e(title)}</title>'
        f"<style>{_STYLE}</style></head><body>"
        '<p class="muted"><a href="/targets">targets</a></p>'
        f"{body}"
        + ('<script src="/static/flame.js"></script>' if script else "")
        + "</body></html>"
    )

