"""Headless Chromium for the browser tests: Debian's chromium driven by Playwright for Python,
every request outside the service refused and recorded, screenshots under the test's tmp dir.
A missing browser fails the tests with how to install it (never a skip)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = (
    "the browser tests need Debian's chromium at /usr/bin/chromium: "
    "bash scripts/setup.sh --dev (or apt-get update && apt-get install -y chromium)"
)


def require_chromium() -> str:
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    return CHROMIUM if Path(CHROMIUM).is_file() else str(shutil.which("chromium"))


@dataclass
class Browsing:
    """A page on the service, with every request it made and every one it was refused."""

    page: Page
    base_url: str
    screenshots: Path
    requests: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        path = self.screenshots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        print(f"screenshot: {path}")  # noqa: T201 - the artifact's path, for whoever reads the log
        return path


@contextmanager
def browse(
    base_url: str, screenshots: Path, *, width: int = 1280, height: int = 900
) -> Iterator[Browsing]:
    executable = require_chromium()
    service_host = urlsplit(base_url).hostname
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            page = context.new_page()
            browsing = Browsing(page, base_url, screenshots)

            def guard(route: Route) -> None:
                url = route.request.url
                browsing.requests.append(url)
                if (
                    urlsplit(url).scheme in ("data", "blob")
                    or urlsplit(url).hostname == service_host
                ):
                    route.continue_()
                else:
                    browsing.refused.append(url)
                    route.abort()

            context.route("**/*", guard)
            page.set_default_timeout(60_000)
            yield browsing
            context.close()
        finally:
            browser.close()
