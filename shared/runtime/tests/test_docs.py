"""/docs works without internet access: Swagger UI's files are served by the service itself."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI

from crm_analytics.app import create_app as analytics_app
from crm_marketing.app import create_app as marketing_app
from crm_runtime.http.app import REQUESTS, create_service_app
from crm_runtime.http.docs import ASSETS_DIR
from crm_runtime.settings import Settings
from crm_sales.app import create_app as sales_app
from crm_service_desk.app import create_app as service_desk_app

SERVICES: dict[str, Callable[[Settings], FastAPI]] = {
    "sales": sales_app,
    "marketing": marketing_app,
    "service-desk": service_desk_app,
    "analytics": analytics_app,
}

CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


class _Urls(HTMLParser):
    """The URLs a page makes the browser fetch: script sources and link targets."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        self.urls += [v for k, v in attrs if k == wanted and v is not None]


def fetched_by(page: str) -> list[str]:
    parser = _Urls()
    parser.feed(page)
    return parser.urls


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """The bare service skeleton (no database: the docs need none)."""
    settings = Settings(service_name="marketing")
    app = create_service_app(settings, title="t", description="d", routers=[], migrations=[])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


@pytest.mark.parametrize("service", sorted(SERVICES))
async def test_every_service_serves_swagger_ui_from_itself(service: str) -> None:
    app = SERVICES[service](Settings.for_service(service))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        page = await c.get("/docs")  # no token: the docs are public, as before
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        urls = fetched_by(page.text)
        assert any(u.endswith(".js") for u in urls) and any(u.endswith(".css") for u in urls)
        assert "://" not in page.text  # nothing else on the page names a host either
        for url in urls:
            parts = urlsplit(url)
            assert not parts.scheme and not parts.netloc and url.startswith("/"), url
            asset = await c.get(url)
            assert asset.status_code == 200, url
            expected = next(t for ext, t in CONTENT_TYPES.items() if parts.path.endswith(ext))
            assert expected in asset.headers["content-type"], (url, asset.headers)
        assert "url: '/openapi.json'" in page.text
        assert (await c.get("/openapi.json")).status_code == 200


async def test_the_bundled_swagger_ui_reads_the_openapi_version_fastapi_writes(
    client: httpx.AsyncClient,
) -> None:
    # Swagger UI 4 answers an OpenAPI 3.1 document with "Unable to render this definition";
    # 3.1 is read from Swagger UI 5 on.
    version = (await client.get("/openapi.json")).json()["openapi"]
    [script] = [u for u in fetched_by((await client.get("/docs")).text) if u.endswith(".js")]
    bundle = (await client.get(script)).text
    match = re.search(r'PACKAGE_VERSION:"(\d+)\.', bundle)
    assert match is not None
    assert version.startswith("3.1.") and int(match.group(1)) >= 5


async def test_docs_pages_and_assets_stay_out_of_the_openapi_and_redoc_is_off(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/docs")]
    assert (await client.get("/redoc")).status_code == 404  # it would load from the internet
    missing = await client.get("/docs-assets/no-such-file.js")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    # the package's other files (a demo page that loads from the internet, source maps) are not
    # served, though they are there
    for extra in ("index.html", "swagger-ui-bundle.js.map"):
        assert (ASSETS_DIR / extra).exists()
        assert (await client.get(f"/docs-assets/{extra}")).status_code == 404


async def test_the_oauth2_redirect_page_is_served(client: httpx.AsyncClient) -> None:
    page = (await client.get("/docs")).text
    assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in page
    redirect = await client.get("/docs/oauth2-redirect")
    assert redirect.status_code == 200
    assert "oauth2" in redirect.text and not fetched_by(redirect.text)


async def test_behind_a_path_prefix_the_page_names_its_assets_under_it() -> None:
    settings = Settings(service_name="marketing")
    app = create_service_app(settings, title="t", description="d", routers=[], migrations=[])
    transport = httpx.ASGITransport(app=app, root_path="/crm/sales")
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        page = (await c.get("/crm/sales/docs")).text
    urls = fetched_by(page)
    assert urls and all(u.startswith("/crm/sales/docs-assets/") for u in urls), urls
    assert "url: '/crm/sales/openapi.json'" in page


def _asset_counts() -> dict[tuple[str, str], float]:
    return {
        (s.labels["route"], s.labels["status"]): s.value
        for metric in REQUESTS.collect()
        for s in metric.samples
        if s.name == "crm_http_requests_total" and "docs-assets" in s.labels["route"]
    }


async def test_asset_requests_are_counted_under_one_route_label(
    client: httpx.AsyncClient,
) -> None:
    before = _asset_counts()
    urls = fetched_by((await client.get("/docs")).text)
    for url in urls:
        assert (await client.get(url)).status_code == 200
    assert (await client.get("/docs-assets/no-such-file.js")).status_code == 404
    after = _asset_counts()
    assert {route for route, _ in after} == {"/docs-assets"}  # not one label per file
    assert after[("/docs-assets", "200")] - before.get(("/docs-assets", "200"), 0) == len(urls)
    assert after[("/docs-assets", "404")] - before.get(("/docs-assets", "404"), 0) == 1


async def test_the_mail_catcher_docs_load_nothing_from_the_internet(tmp_path: Path) -> None:
    from crm_runtime.mailcatcher import MailStore, create_mail_app

    app = create_mail_app(MailStore(tmp_path))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        page = await c.get("/docs")
        assert page.status_code == 200 and "://" not in page.text
        parser = _Urls()
        parser.feed(page.text)
        assert parser.urls
        for url in parser.urls:
            assert (await c.get(url)).status_code == 200, url


def test_response_examples_keep_their_nulls_in_the_openapi() -> None:
    """FastAPI drops nulls from the document; an example must still fit its model."""
    from fastapi import APIRouter

    router = APIRouter()

    @router.get("/things", responses={200: {"content": {"application/json": {"example": {
        "name": "x", "as_of": None}}}}})  # fmt: skip
    async def things() -> dict[str, str | None]:
        return {"name": "x", "as_of": None}

    app = create_service_app(
        Settings(service_name="marketing"), title="t", description="d", routers=[router],
        migrations=[],
    )  # fmt: skip
    op = app.openapi()["paths"]["/things"]["get"]
    assert op["responses"]["200"]["content"]["application/json"]["example"] == {
        "name": "x",
        "as_of": None,
    }
