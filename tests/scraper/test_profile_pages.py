"""The profile pages in a real headless Chromium: a stored Go CPU profile as a flame graph, zoom,
search, hover, the diff of two profiles; and what the server refuses to show.

Set ``UPDATE_DOCS_SCREENSHOTS=1`` to write the screenshots the README shows into docs/.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from scraper import flame
from scraper.config import Config, parse_config
from scraper.httpserver import start_http_server
from scraper.receivers import Profile, build_receiver
from scraper.status import register_specs

GO = Path(__file__).parent.parent / "data" / "go"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
INSTANCE = "10.0.0.7:6060"
START = 1_767_311_998.5  # 2026-01-01T23:59:58.5Z


def stored_config(root: Path) -> Config:
    return parse_config({
        "scrape": {
            "api": {"targets": [{"__address__": INSTANCE}], "forward_to": ["files"]},
            "edge": {"targets": [{"__address__": "10.0.0.9:6060"}], "forward_to": ["pyro"]},
        },
        "write": {"files": {"type": "file", "path": str(root)}, "pyro": {"type": "pyroscope", "url": "http://pyro:4040"}},
    })


def store(config: Config, name: str, file: str, i: int, url: str, **labels: str) -> None:
    receiver = build_receiver("files", config.write["files"])
    receiver.push(Profile(
        id=f"{file.split('.')[0]}", body=(GO / file).read_bytes(), start=START + 15 * i, end=START + 15 * i + 10, url=url,
        labels={"job": "api", "instance": INSTANCE, "service_name": "api", "__name__": name, **labels},
    ))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Config]]:
    """An HTTP server over a file store holding three CPU profiles and an allocs profile of one target."""
    root = tmp_path_factory.mktemp("profiles")
    config = stored_config(root)
    for i in (1, 2, 3):
        store(config, "process_cpu", f"cpu_{i}.pb.gz", i, f"http://{INSTANCE}/debug/pprof/profile?seconds=14")
    store(config, "memory", "allocs_1.pb.gz", 1, f"http://{INSTANCE}/debug/pprof/allocs")
    http, port = start_http_server(0, redis_factory=None, host="127.0.0.1", config=lambda: config)
    yield f"http://127.0.0.1:{port}", config
    http.shutdown()
    http.server_close()


def series(name: str) -> str:
    return urlencode({"store": "files", "job": "api", "name": name, "instance": INSTANCE})


def relative(config: Config, file: str) -> str:
    root = Path(config.write["files"].path)
    (found,) = root.rglob(f"*-{file.split('.')[0]}.pb.gz")
    return str(found.relative_to(root))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


# --------------------------------------------------------------------------- in Chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium) to run the page tests")
    playwright = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright is not installed")
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1100, "height": 700})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def screenshot(page, tmp_path: Path, name: str) -> None:
    """A screenshot of the page; into docs/ too when UPDATE_DOCS_SCREENSHOTS is set."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=False)
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(shot, DOCS / name)


def open_latest_cpu(page, base: str) -> None:
    page.goto(f"{base}/profile/latest?{series('process_cpu')}")
    page.wait_for_function("document.getElementById('flame').dataset.frames > 0")


def test_the_flame_graph_of_a_go_cpu_profile_renders_with_its_top_functions(server, page, tmp_path) -> None:
    base, _ = server
    open_latest_cpu(page, base)
    profile = flame.parse((GO / "cpu_3.pb.gz").read_bytes())
    index = profile.type_index("cpu")
    first = flame.top(profile, index)[0]

    assert page.evaluate("name => flameGraph.locate(name)", first.name) is not None
    top_row = page.locator("table.top tbody tr").first
    assert top_row.locator("td.fn").inner_text() == first.name
    assert top_row.locator("td").first.inner_text() == flame.format_value(first.flat, "nanoseconds")
    assert "cpu" in page.locator("p.types strong").inner_text()
    screenshot(page, tmp_path, "profile-flame.png")


def test_clicking_a_frame_zooms_into_it_and_reset_zooms_back_out(server, page, tmp_path) -> None:
    base, _ = server
    open_latest_cpu(page, base)
    target = page.evaluate("flameGraph.locate('main.fibRound')")

    page.mouse.click(target["x"], target["y"])

    assert page.locator("#flame").get_attribute("data-zoom") == "main.fibRound"
    assert "Zoomed into main.fibRound" in page.locator("#flame-zoom").inner_text()
    screenshot(page, tmp_path, "profile-zoom.png")
    page.click("#flame-reset")
    assert page.locator("#flame").get_attribute("data-zoom") == "total"


def test_search_highlights_matching_frames_and_says_their_share_of_the_total(server, page, tmp_path) -> None:
    base, _ = server
    open_latest_cpu(page, base)
    profile = flame.parse((GO / "cpu_3.pb.gz").read_bytes())
    index = profile.type_index("cpu")
    row = next(r for r in flame.top(profile, index) if r.name == "main.fibRound")
    share = f"{100 * row.cum / profile.total(index):.2f}%"

    page.fill("#flame-search", "fibround")

    result = page.locator("#flame-search-result")
    assert "1 function match" in result.inner_text() and share in result.inner_text()
    highlighted = page.evaluate(
        "(() => { const p = flameGraph.locate('main.fibRound'); const c = document.getElementById('flame');"
        " const r = c.getBoundingClientRect(); const d = c.getContext('2d').getImageData("
        "(p.x - r.left - scrollX) * devicePixelRatio, (p.y - r.top - scrollY) * devicePixelRatio + 6, 1, 1).data;"
        " return [d[0], d[1], d[2]]; })()")
    assert highlighted == [0xB8, 0x4D, 0xFF]  # the highlight colour
    screenshot(page, tmp_path, "profile-search.png")


def test_hovering_a_frame_shows_its_values_in_the_profiles_unit(server, page) -> None:
    base, _ = server
    open_latest_cpu(page, base)
    target = page.evaluate("flameGraph.locate('main.fibRound')")

    page.mouse.move(target["x"], target["y"])

    tooltip = page.locator("#flame-tooltip")
    tooltip.wait_for(state="visible")
    assert tooltip.inner_text().startswith("main.fibRound\ntotal: ")
    assert " ms (" in tooltip.inner_text()


def test_the_diff_of_two_profiles_of_a_series_renders(server, page, tmp_path) -> None:
    base, _ = server
    page.goto(f"{base}/profile/history?{series('process_cpu')}")
    page.click("text=compare the two chosen")
    page.wait_for_function("document.getElementById('flame').dataset.frames > 0")

    assert page.locator("h1").inner_text().startswith("What changed")
    assert page.evaluate("flameGraph.locate('main.fibRound')") is not None
    screenshot(page, tmp_path, "profile-diff.png")


# --------------------------------------------------------------------------- over plain HTTP


def test_targets_link_to_the_latest_stored_profile_and_its_history(server, redis_client) -> None:
    from scraper.plan import plan

    _, config = server
    register_specs(redis_client, [s for s in plan(config) if s.job == "api" and s.profile_type == "process_cpu"])
    http, port = start_http_server(0, redis_factory=lambda: redis_client, host="127.0.0.1", config=lambda: config)
    try:
        _, targets = get(f"http://127.0.0.1:{port}/targets")
        assert f'href="/profile/history?{series("process_cpu").replace("&", "&amp;")}"' in targets
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/profile/latest?{series('process_cpu')}") as latest:
            assert latest.url.endswith("-cpu_3.pb.gz")  # the newest of the three
            assert "flame-data" in latest.read().decode()
    finally:
        http.shutdown()
        http.server_close()


def test_a_job_that_pushes_only_to_pyroscope_links_to_its_series_there(server) -> None:
    from scraper.profile_view import ProfileLibrary, profile_links

    _, config = server
    links = profile_links(ProfileLibrary(config), {"job": "edge", "instance": "10.0.0.9:6060",
                                                   "service_name": "edge", "__name__": "process_cpu"})

    assert "http://pyro:4040/?query=process_cpu%3Acpu%3Ananoseconds%3Acpu%3Ananoseconds%7Bservice_name%3D%22edge" in links


def test_cumulative_types_say_they_count_since_process_start(server) -> None:
    base, config = server
    path = relative(config, "allocs_1.pb.gz")

    _, alloc = get(f"{base}/profile?{urlencode({'store': 'files', 'path': path, 'type': 'alloc_space'})}")
    _, inuse = get(f"{base}/profile?{urlencode({'store': 'files', 'path': path, 'type': 'inuse_space'})}")

    assert "since the process started" in alloc
    assert "since the process started" not in inuse and "A snapshot" in inuse


def test_a_diff_of_cumulative_profiles_says_the_change_is_what_happened_between(server, tmp_path) -> None:
    config = stored_config(tmp_path)
    for i in (1, 2):
        store(config, "memory", f"allocs_{i}.pb.gz", i, f"http://{INSTANCE}/debug/pprof/allocs")
    http, port = start_http_server(0, redis_factory=None, host="127.0.0.1", config=lambda: config)
    try:
        _, page = get(f"http://127.0.0.1:{port}/profile/diff?" + urlencode({
            "store": "files", "base": relative(config, "allocs_1.pb.gz"), "path": relative(config, "allocs_2.pb.gz"),
            "type": "alloc_space"}))
    finally:
        http.shutdown()
        http.server_close()
    assert "Both profiles count <strong>since the process started</strong>" in page


def test_the_sidecars_cumulative_field_decides_what_the_page_says(server, tmp_path) -> None:
    config = stored_config(tmp_path)
    store(config, "memory", "allocs_delta_1.pb.gz", 1, f"http://{INSTANCE}/debug/pprof/allocs")
    (sidecar,) = tmp_path.rglob("*.json")
    sidecar.write_text(sidecar.read_text().replace('"id"', '"cumulative": false, "id"'))
    http, port = start_http_server(0, redis_factory=None, host="127.0.0.1", config=lambda: config)
    try:
        _, page = get(f"http://127.0.0.1:{port}/profile?"
                      + urlencode({"store": "files", "path": relative(config, "allocs_delta_1.pb.gz"),
                                   "type": "alloc_space"}))
    finally:
        http.shutdown()
        http.server_close()
    assert "since the process started" not in page


@pytest.mark.parametrize("path", ["../../../../etc/passwd", "/etc/passwd", "api", "%s"])
def test_only_profiles_inside_a_configured_file_store_are_served(server, path: str) -> None:
    base, config = server
    if path == "%s":  # a sidecar: in the store, but not a profile
        path = relative(config, "cpu_1.pb.gz").replace(".pb.gz", ".json")
    for page in ("/profile", "/profile/raw"):
        code, body = get(f"{base}{page}?{urlencode({'store': 'files', 'path': path})}")
        assert code == 404 and "root:" not in body


def test_a_stored_profile_downloads_as_the_target_sent_it(server) -> None:
    base, config = server
    with urllib.request.urlopen(f"{base}/profile/raw?{urlencode({'store': 'files', 'path': relative(config, 'cpu_2.pb.gz')})}") as r:
        assert r.read() == (GO / "cpu_2.pb.gz").read_bytes()


def test_without_a_config_the_profile_pages_say_why() -> None:
    http, port = start_http_server(0, redis_factory=None, host="127.0.0.1")
    try:
        code, body = get(f"http://127.0.0.1:{port}/profile?{urlencode({'store': 'files', 'path': 'x.pb.gz'})}")
    finally:
        http.shutdown()
        http.server_close()
    assert code == 404 and "need the config" in body
