"""The API reference pages work offline: every asset they reference is served by the server."""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import pytest

#: Attributes and script settings through which a page loads something.
_REFERENCES = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")

_MEDIA = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}


def references(html: str) -> list[str]:
    return [a or b for a, b in _REFERENCES.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_everything_from_this_server(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # Nothing off-host: no absolute or protocol-relative URL, anywhere in the page.
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}", html, re.IGNORECASE), html
    found = references(html)
    assert "/openapi.json" in found
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no request to an online spec validator
    assert any(url.endswith(".js") for url in found)
    for url in found:
        absolute = urljoin(f"http://testserver{page}", url)
        assert urlsplit(absolute).netloc == "testserver", url
        asset = client.get(absolute)
        assert asset.status_code == 200, url
        assert asset.content, url
        suffix = url[url.rfind(".") :]
        assert asset.headers["content-type"].startswith(_MEDIA[suffix]), (url, asset.headers)


def test_the_swagger_bundle_is_the_real_one(client):
    """The served files are the libraries, not stubs."""
    js = client.get("/docs/assets/swagger-ui-bundle.js")
    assert len(js.content) > 100_000 and b"SwaggerUIBundle" in js.content
    redoc = client.get("/docs/assets/redoc.standalone.js")
    assert len(redoc.content) > 100_000 and b"Redoc" in redoc.content


@pytest.mark.parametrize("name", ["nope.js", "..%2F__init__.py", "core.py"])
def test_only_the_listed_assets_are_served(client, name):
    assert client.get(f"/docs/assets/{name}").status_code == 404


def test_docs_routes_are_labelled_in_metrics(client):
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
        assert client.get(path).status_code == 200
    assert client.get("/no/such/page").status_code == 404
    text = client.get("/metrics").text
    for route in ("/docs", "/redoc", "/openapi.json", "/docs/assets/{name}"):
        assert f'method="GET",route="{route}",status="200"' in text, route
    assert 'route="unmatched",status="404"' in text  # unknown paths still are
