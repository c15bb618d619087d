"""The live web view at `/`: served offline, behind no key, and working in a real browser.

The browser tests drive headless Chromium with Playwright against a real server on
loopback. Every wait is on a condition in the page, bounded by a timeout.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import httpx
from service_helpers import SMALL, batch, wave

from service.api.routes.ui import STATIC_DIR

#: Bound on any wait for the page (a shared 2-core machine can be slow; never a sleep).
WAIT_MS = 60_000

#: Colours of the view's observations, forecast and eigenvalue dots (app.js), on white.
OBSERVED, FORECAST, EIGENVALUE = (29, 35, 48), (31, 95, 191), (111, 155, 224)

#: ``EK_WEB_SCREENSHOTS=DIR`` keeps screenshots of the browser tests for a human to look at.
SCREENSHOTS = os.environ.get("EK_WEB_SCREENSHOTS")


def push(url: str, series_id: str, values: Any, start: int = 0, key: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        if start == 0:
            assert client.put(f"/v1/series/{series_id}", json={"params": SMALL}).status_code in (
                200,
                201,
            )
        response = client.post(f"/v1/series/{series_id}/observations", json=batch(values, start))
        assert response.status_code == 200, response.text


def get(url: str, path: str, key: str | None = None, **params: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx.get(f"{url}{path}", params=params, headers=headers, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def open_view(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A new tab on the view, collecting page errors and console errors."""
    page = browser.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.goto(url)
    return page, problems


def wait_for_count(page: Any, n: int) -> None:
    """Wait until the view shows a forecast made from ``n`` observations."""
    page.wait_for_function(
        "(n) => document.querySelector('#forecast-n')?.textContent === String(n)",
        arg=n,
        timeout=WAIT_MS,
    )


def drawn_forecast(page: Any) -> dict[str, list[Any]]:
    """Each dataset of the forecast chart, by label: its points' y values."""
    return page.evaluate(
        """() => Object.fromEntries(
            Chart.getChart(document.querySelector('#forecast-chart')).data.datasets.map(
                (d) => [d.label, d.data.map((p) => p.y)]))"""
    )


def ink(page: Any, selector: str, rgb: tuple[int, int, int]) -> int:
    """Opaque pixels of a canvas within a small distance of a colour (what a series drew)."""
    return page.evaluate(
        """([selector, rgb]) => {
            const canvas = document.querySelector(selector);
            const pixels = canvas.getContext('2d').getImageData(
                0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                const near = [0, 1, 2].every((c) => Math.abs(pixels[i + c] - rgb[c]) <= 24);
                if (pixels[i + 3] > 200 && near) n += 1;
            }
            return n;
        }""",
        [selector, list(rgb)],
    )


def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


# ------------------------------------------------------------------ served, offline, no key
def test_the_page_and_its_assets_load_without_a_key(make_client):
    client = make_client(api_keys="secret")
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp
    assert client.get("/v1/overview").status_code == 401  # the data stays behind the key
    # Everything the page references is served here: no CDN, no other origin.
    references = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    for reference in references:
        if reference.startswith(("#", "data:")):
            continue
        assert reference.startswith("/"), reference
        if reference.startswith("/ui/"):
            asset = client.get(reference)
            assert asset.status_code == 200, reference
            assert asset.headers["x-content-type-options"] == "nosniff"
    assert "/ui/vendor/chart.umd.min.js" in references
    for path in STATIC_DIR.glob("*.*"):  # the view's own files (the vendored one is above)
        assert "://" not in path.read_text(), path.name
    # The vendored library keeps its licence beside it, and the record says which version.
    assert "MIT" in client.get("/ui/vendor/chart.js.LICENSE.md").text
    chart = client.get("/ui/vendor/chart.umd.min.js").text
    version = re.search(r"Chart\.js v(\d+\.\d+\.\d+)", chart)
    assert version and version.group(1) in (STATIC_DIR / "vendor" / "README.md").read_text()


def test_only_the_static_files_are_served(client):
    for path in ("/ui/../settings.py", "/ui/%2e%2e/settings.py", "/ui/nope.js", "/ui/"):
        assert client.get(path).status_code == 404, path
    assert client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")


def test_every_static_file_is_package_data():
    """A wheel ships only the package data globs: each static file must match one."""
    root = Path(__file__).resolve().parents[2]
    package_data = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["service"]

    def matches(relative: str, glob: str) -> bool:  # setuptools' "*" stays in one directory
        parts, globs = relative.split("/"), glob.split("/")
        return len(parts) == len(globs) and all(map(fnmatch.fnmatch, parts, globs))

    for path in STATIC_DIR.rglob("*"):
        if path.is_file():
            relative = path.relative_to(root / "service").as_posix()
            assert any(matches(relative, glob) for glob in package_data), relative


# ------------------------------------------------------------------ the overview route
def test_overview_has_memory_size_and_coverage(client):
    client.put("/v1/series/b", json={"params": SMALL})
    client.post("/v1/series/b/observations", json=batch(wave(300)))
    client.put("/v1/series/a")
    info = client.get("/v1/series/b").json()  # a read waits for the model to catch up
    page = client.get("/v1/overview").json()
    assert page["total"] == 2 and [item["id"] for item in page["items"]] == ["a", "b"]
    empty, series = page["items"]
    assert empty["n_observations"] == 0 and empty["memory_size"] == 0  # the PUT loaded it
    assert series["n_observations"] == series["applied"] == 300
    assert series["memory_size"] == info["memory_size"] > 0
    assert series["coverage"] == info["coverage"] is not None
    assert series["level"] == 0.9 and series["last_t"] == 299
    assert [i["id"] for i in client.get("/v1/overview?offset=1&limit=1").json()["items"]] == ["b"]
    assert client.get("/v1/overview?limit=100000").status_code == 422


# ------------------------------------------------------------------ in a browser
def test_the_view_draws_and_follows_pushes_live(live_server, browser):
    server = live_server()
    values = wave(340)
    push(server.url, "s", values[:300])
    page, problems = open_view(browser, f"{server.url}/#series=s")
    wait_for_count(page, 300)
    page.wait_for_selector("#episodes li[data-episode-id]", timeout=WAIT_MS)
    horizon = SMALL["episode_horizon"]
    served = get(server.url, "/v1/series/s/forecast", horizon=horizon)
    drawn = drawn_forecast(page)
    # What is drawn is the server's forecast, after the last observation it joins.
    assert drawn["forecast"] == [values[299], *served["mean"]]
    assert drawn["90% interval"][1:] == served["upper"]
    assert drawn["_lower"][1:] == served["lower"]
    assert drawn["observations"][-1] == values[299]
    # The lines are on the canvas, in their colours (legend boxes alone are ~170 pixels each).
    assert ink(page, "#forecast-chart", OBSERVED) > 800
    assert ink(page, "#forecast-chart", FORECAST) > 400
    assert ink(page, "#spectrum-chart", EIGENVALUE) > 300  # the dots (no legend there)
    assert page.locator("#series-table tr[data-series-id='s']").count() == 1
    screenshot(page, "series-view")

    # A push updates the forecast through the stream, in the same page (no reload).
    page.evaluate("() => { window.sameDocument = true; }")
    push(server.url, "s", values[300:], start=300)
    wait_for_count(page, 340)
    assert page.evaluate("() => window.sameDocument === true")
    served = get(server.url, "/v1/series/s/forecast", horizon=horizon)
    page.wait_for_function(
        "(mean) => JSON.stringify(Chart.getChart(document.querySelector('#forecast-chart'))"
        ".data.datasets[3].data.slice(1).map((p) => p.y)) === JSON.stringify(mean)",
        arg=served["mean"],
        timeout=WAIT_MS,
    )
    # The series list follows too (it refreshes after stream events).
    page.wait_for_function(
        "() => document.querySelector(\"#series-table tr[data-series-id='s'] td.num\")"
        "?.textContent === '340'",
        timeout=WAIT_MS,
    )
    assert problems == []


def test_the_episode_panel_names_recalled_episodes_from_memory(live_server, browser):
    server = live_server()
    push(server.url, "s", wave(300))
    page, problems = open_view(browser, f"{server.url}/#series=s")
    wait_for_count(page, 300)
    page.wait_for_selector("#episodes li[data-episode-id]", timeout=WAIT_MS)
    named = [
        int(i)
        for i in page.eval_on_selector_all(
            "#episodes li", "(items) => items.map((li) => li.dataset.episodeId)"
        )
    ]
    memory = get(server.url, "/v1/series/s/episodes", limit=1000)
    assert memory["total"] <= 1000
    stored = {episode["id"] for episode in memory["items"]}
    assert named and set(named) <= stored
    forecast = get(server.url, "/v1/series/s/forecast", horizon=SMALL["episode_horizon"])
    by_weight = sorted(forecast["recalled"], key=lambda r: -r["weight"])
    assert named == [r["id"] for r in by_weight]
    text = page.inner_text("#episodes")
    for recalled in by_weight:
        assert f"episode {recalled['id']}" in text
    # The most-weighted ones are overlaid on the chart: the window and what followed.
    drawn = drawn_forecast(page)
    top = by_weight[0]
    overlay = next(v for k, v in drawn.items() if k.startswith(f"episode {top['id']} "))
    followed = get(
        server.url,
        "/v1/series/s/observations",
        offset=top["origin"] + 1,
        limit=SMALL["episode_horizon"],
    )
    assert overlay[-SMALL["episode_horizon"] :] == [o["y"] for o in followed["items"]]
    assert problems == []


def test_with_api_keys_the_view_asks_for_one(live_server, browser):
    key = "k-3f9a2c"
    server = live_server(api_keys=f"other,{key}")
    push(server.url, "s", wave(200), key=key)
    requests: list[Any] = []
    page = browser.new_page()
    page.on("request", lambda request: requests.append(request))
    page.goto(f"{server.url}/#series=s")
    page.wait_for_selector("#key-panel:not([hidden])", timeout=WAIT_MS)
    assert page.locator("#series-table tbody tr").count() == 0
    page.fill("#key-input", "wrong")
    page.click("#key-form button")
    page.wait_for_function(
        "() => document.querySelector('#key-message').textContent.includes('not accepted')",
        timeout=WAIT_MS,
    )
    page.fill("#key-input", key)
    page.click("#key-form button")
    wait_for_count(page, 200)
    assert page.locator("#key-panel").is_hidden()
    push(server.url, "s", wave(20, start=200), start=200, key=key)
    wait_for_count(page, 220)
    # The key travels in a header, never in a URL (which servers log).
    assert requests and not any(key in request.url for request in requests)
    stream = [r for r in requests if "/forecast/stream" in r.url]
    assert stream and stream[-1].all_headers().get("authorization") == f"Bearer {key}"
    screenshot(page, "with-key")
