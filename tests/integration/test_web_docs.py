"""Swagger UI and ReDoc in a real browser against the real service, with every host but the
service refused: they render from the service's own assets, "Try it out" on /embedding with a
real photo answers 200, and the forms prefill nothing that changes a request."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from face_service.testing.service_process import ServiceProcess
from tests.integration.browser_support import browse
from tests.photos import wheel_photos

EMBEDDING = "#operations-faces-embedding_embedding_post"
SIMILARITY = "#operations-faces-face_similarity_face_similarity_post"
ENROLL = "#operations-identities-enroll_identities_post"


def only_the_service(requests: list[str], base_url: str) -> None:
    hosts = {urlsplit(url).netloc for url in requests if urlsplit(url).scheme.startswith("http")}
    assert hosts == {urlsplit(base_url).netloc}


def test_swagger_ui_works_offline_and_try_it_out_embeds(
    service: ServiceProcess, tmp_path: Path
) -> None:
    with browse(service.url, tmp_path) as browsing:
        page = browsing.page
        page.goto(f"{service.url}/docs")
        page.wait_for_selector(EMBEDDING)
        assert page.locator(".opblock-tag-section").count() >= 6  # faces, extract, identities...

        for operation in (SIMILARITY, ENROLL):
            page.click(f"{operation} .opblock-summary")
            page.click(f"{operation} .try-out__btn")
        threshold = page.locator(f'{SIMILARITY} input[placeholder="threshold"]')
        assert threshold.input_value() == ""  # not -1: that would match two strangers
        assert page.locator(f'{ENROLL} input[placeholder="identity_id"]').input_value() == ""
        assert page.locator(f"{SIMILARITY} input[type=file]").count() == 2
        # Repeated files: a file picker per item, and more items on request.
        page.click(f"{ENROLL} .json-schema-form-item-add")
        assert page.locator(f"{ENROLL} input[type=file]").count() >= 1

        page.click(f"{EMBEDDING} .opblock-summary")
        page.click(f"{EMBEDDING} .try-out__btn")
        page.set_input_files(f"{EMBEDDING} input[type=file]", str(wheel_photos()["tom_hanks"]))
        page.click(f"{EMBEDDING} .execute")
        status = page.locator(f"{EMBEDDING} .live-responses-table tbody td.response-col_status")
        status.first.wait_for()
        assert status.first.inner_text().strip() == "200"
        assert (
            '"faces_detected": 1' in page.locator(f"{EMBEDDING} .live-responses-table").inner_text()
        )
        browsing.screenshot("swagger-embedding-200")
    assert browsing.refused == []
    only_the_service(browsing.requests, service.url)
    assert any(url.endswith("/static/docs/swagger-ui-bundle.js") for url in browsing.requests)


def test_redoc_renders_offline(service: ServiceProcess, tmp_path: Path) -> None:
    with browse(service.url, tmp_path) as browsing:
        page = browsing.page
        page.goto(f"{service.url}/redoc")
        heading = page.locator("h2", has_text="Embedding of the most prominent face in an image")
        heading.first.wait_for()
        assert page.locator("h1").first.inner_text().startswith("Face recognition service")
        browsing.screenshot("redoc")
    assert browsing.refused == []
    only_the_service(browsing.requests, service.url)


LIST_IDENTITIES = "#operations-identities-list_identities_identities_get"
LIST_STATUS = f"{LIST_IDENTITIES} .live-responses-table tbody td.response-col_status"


def test_swagger_authorize_sends_the_key(service: ServiceProcess, tmp_path: Path) -> None:
    """With keys required, "Try it out" is refused until the Authorize button is given a key,
    then the same call answers 200 with the key in its X-API-Key header."""
    key = "swagger-admin-" + "k" * 32
    keyed = ServiceProcess(
        api_port=0,
        triton_url=service.triton_address,
        work_dir=tmp_path / "keyed",
        env={"FACE_AUTH": "required", "FACE_ADMIN_KEY": key},
    )
    with keyed, browse(keyed.url, tmp_path) as browsing:
        page = browsing.page
        page.goto(f"{keyed.url}/docs")
        page.wait_for_selector(LIST_IDENTITIES)
        page.click(f"{LIST_IDENTITIES} .opblock-summary")
        page.click(f"{LIST_IDENTITIES} .try-out__btn")
        status = page.locator(
            f"{LIST_IDENTITIES} .live-responses-table tbody td.response-col_status"
        )
        page.click(f"{LIST_IDENTITIES} .execute")
        status.first.wait_for()
        assert status.first.inner_text().strip() == "401"

        page.click(".swagger-ui .btn.authorize")
        page.locator(".auth-container input").first.fill(key)
        page.locator(".auth-container").first.locator("button.authorize").click()
        page.locator("button.btn-done").first.click()
        page.click(f"{LIST_IDENTITIES} .execute")
        page.wait_for_function(
            "selector => document.querySelector(selector)?.innerText.trim() === '200'",
            arg=LIST_STATUS,
        )
        curl = page.locator(f"{LIST_IDENTITIES} .curl-command").inner_text()
        assert f"X-API-Key: {key}" in curl
        browsing.screenshot("swagger-authorized-200")
    assert browsing.refused == []
