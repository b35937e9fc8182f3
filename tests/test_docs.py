"""GET /docs: Swagger UI served from the package itself, with nothing loaded from elsewhere."""
import re
from html.parser import HTMLParser
from pathlib import Path

import usage_server

VENDOR = Path(usage_server.__file__).parent / "static" / "vendor" / "swagger-ui"
EXTERNAL = re.compile(r"(?:https?:)?//[^\s\"'<>)]+")


class References(HTMLParser):
    """Every src and href of a page."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_docs_page_loads_only_local_assets_that_answer(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    parser = References()
    parser.feed(page)
    assets = [url for url in parser.urls if not url.startswith("data:")]
    assert sorted(assets) == sorted([
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/docs.js",
    ])
    for url in assets:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.get_data()) > 0
    assert 'data-spec="/openapi.json"' in page
    assert client.get("/openapi.json").status_code == 200


def test_the_browser_is_told_to_load_nothing_from_elsewhere(client):
    policy = client.get("/docs").headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    for sources in directives.values():
        assert not EXTERNAL.search(sources) and "*" not in sources


def test_the_setup_script_and_stylesheet_reference_no_external_url(client):
    script = client.get("/static/docs.js").get_data(as_text=True)
    assert not EXTERNAL.search(script)
    assert "validatorUrl: null" in script  # Swagger UI would otherwise ask an online validator
    css = client.get("/static/vendor/swagger-ui/swagger-ui.css").get_data(as_text=True)
    urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    assert urls and all(url.startswith("data:") for url in urls)
    assert "@import" not in css


def test_the_vendored_viewer_is_pinned_and_licensed():
    assert sorted(path.name for path in VENDOR.iterdir()) == [
        "LICENSE", "NOTICE", "VERSION", "swagger-ui-bundle.js", "swagger-ui-bundle.js.LICENSE.txt", "swagger-ui.css",
    ]
    assert "Apache License" in (VENDOR / "LICENSE").read_text()
    assert re.match(r"swagger-ui-dist \d+\.\d+\.\d+ ", (VENDOR / "VERSION").read_text())
