"""The web page at / in a real browser against the real service, with real photos (the wheels'
Tom Hanks and Yao Ming, and pictures made of them): compare, enroll, identify, thumbnails,
rename, delete a photo and the person, find faces, the error messages and the API-key prompt,
asserted on what the page shows. Screenshots are saved under the test's tmp dir."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Page, Route

from face_service.testing.service_process import ServiceProcess
from tests.integration.browser_support import browse
from tests.photos import wheel_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The wheels' photos, a second picture of Tom Hanks (larger, mirrored), a group of him and
    Yao Ming side by side, and a file that is not an image."""
    folder = tmp_path_factory.mktemp("web-photos")
    originals = wheel_photos()
    hanks = Image.open(originals["tom_hanks"]).convert("RGB")
    yao = Image.open(originals["yaoming"]).convert("RGB")
    second = hanks.resize((hanks.width * 2, hanks.height * 2)).transpose(Image.FLIP_LEFT_RIGHT)
    second.save(folder / "hanks_second.jpg", quality=92)
    scaled = hanks.resize((yao.height * hanks.width // hanks.height, yao.height))
    group = Image.new("RGB", (scaled.width + yao.width + 40, yao.height), "white")
    group.paste(scaled, (0, 0))
    group.paste(yao, (scaled.width + 40, 0))
    group.save(folder / "group.jpg", quality=92)
    (folder / "notes.txt").write_text("not a photo")
    return {
        "hanks": originals["tom_hanks"],
        "hanks_second": folder / "hanks_second.jpg",
        "yao": originals["yaoming"],
        "group": folder / "group.jpg",
        "text": folder / "notes.txt",
    }


def open_tab(page: Page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def compare(page: Page, first: Path, second: Path) -> str:
    page.set_input_files("#compare-a", str(first))
    page.set_input_files("#compare-b", str(second))
    page.get_by_role("button", name="Compare", exact=True).click()
    page.wait_for_function("document.getElementById('status').textContent === ''")
    return page.inner_text("#compare-decision")


def drop_file(page: Page, zone: str, path: Path) -> None:
    """Drags ``path`` onto the drop zone, as a person dropping a photo from their files."""
    page.evaluate(
        """([zone, name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
            const target = document.querySelector(zone);
            const event = { dataTransfer: transfer, bubbles: true };
            target.dispatchEvent(new DragEvent("dragover", event));
            target.dispatchEvent(new DragEvent("drop", event));
        }""",
        [zone, path.name, base64.b64encode(path.read_bytes()).decode()],
    )


def test_compare_two_photos(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    with browse(service.url, tmp_path) as browsing:
        page = browsing.page
        page.goto(f"{service.url}/")
        assert compare(page, photos["hanks"], photos["hanks_second"]) == "Same person"
        similarity = float(page.inner_text("#compare-similarity"))
        assert similarity > float(page.inner_text("#compare-used-threshold")) > 0
        assert page.is_visible("#compare-canvas-a")
        assert page.is_visible("#compare-canvas-b")
        browsing.screenshot("compare-same")
        assert compare(page, photos["hanks"], photos["yao"]) == "Different people"
        assert float(page.inner_text("#compare-similarity")) < 0.2
        browsing.screenshot("compare-different")
        # Dropped instead of picked, and submitted from the keyboard.
        drop_file(page, '[data-input="compare-b"]', photos["hanks_second"])
        assert page.evaluate("document.getElementById('compare-b').files[0].name") == (
            "hanks_second.jpg"
        )
        page.focus("#compare-threshold")
        page.keyboard.press("Enter")
        page.locator("#compare-decision", has_text="Same person").wait_for()
        # Another photo takes the verdict away, with the photos drawn for it: it was not made
        # from these. Not an image: the API's 415/400 becomes a sentence, and no earlier verdict
        # stands beside the file it failed on.
        page.set_input_files("#compare-b", str(photos["text"]))
        assert page.is_hidden("#compare-result")
        assert page.is_hidden("#compare-canvas-a")
        assert page.is_hidden("#compare-canvas-b")
        page.get_by_role("button", name="Compare", exact=True).click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert alert.inner_text().startswith(("Not an image:", "This could not be read:"))
        assert page.is_hidden("#compare-result")
        assert page.is_hidden("#compare-canvas-b")
    assert browsing.refused == []


def enroll(page: Page, name: str, identity_id: str, images: list[Path]) -> None:
    open_tab(page, "People")
    page.locator("#enroll-details summary").click()
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Id (optional: a new one is made)").fill(identity_id)
    page.get_by_label("Metadata (optional JSON object)").fill('{"team": "web test"}')
    page.set_input_files("#enroll-images", [str(path) for path in images])
    page.get_by_role("button", name="Enroll", exact=True).click()
    page.locator("#person-title", has_text=name).wait_for()


def test_enroll_identify_and_delete(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    name, identity_id = f"Tom Hanks {suffix}", f"web-{suffix}"
    with browse(service.url, tmp_path) as browsing:
        page = browsing.page
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{service.url}/")

        enroll(page, name, identity_id, [photos["hanks"], photos["hanks_second"], photos["text"]])
        report = page.locator("#enroll-report li")
        assert report.count() == 3
        assert "skipped" in report.nth(2).inner_text()
        assert json.loads(page.input_value("#person-metadata")) == {"team": "web test"}
        thumbnails = page.locator("#person-templates img")
        assert thumbnails.count() == 2
        page.wait_for_function(
            "[...document.querySelectorAll('#person-templates img')]"
            ".every(img => img.naturalWidth === 112)"
        )
        page.get_by_label("Search by name").fill(suffix)
        page.get_by_role("button", name="Search", exact=True).first.click()
        page.locator("#people-list li", has_text=name).wait_for()
        assert page.locator("#people-list li").count() == 1
        browsing.screenshot("person")

        open_tab(page, "Identify")
        page.set_input_files("#identify-image", str(photos["group"]))
        page.get_by_role("button", name="Identify", exact=True).click()
        page.locator("#identify-faces li").first.wait_for()
        labels = page.locator("#identify-faces li").all_inner_texts()
        # The faces come best detection score first, which may be either of them.
        assert len(labels) == 2
        [recognised] = [label for label in labels if label != "unknown"]
        assert recognised.startswith(f"{name} 0.")  # the name on the face, and its similarity
        assert labels.count("unknown") == 1
        assert page.inner_text("#identify-summary").startswith("2 face(s), 1 recognised")
        browsing.screenshot("identify")

        # Merge: another person's photos move to this one, the other is gone.
        other = f"web-other-{suffix}"
        enrolled = httpx.post(
            f"{service.url}/identities",
            files=[("images", ("yao.jpg", photos["yao"].read_bytes(), "image/jpeg"))],
            data={"identity_id": other, "name": f"Yao {suffix}"},
            timeout=60,
        )
        assert enrolled.status_code == 201
        open_tab(page, "People")
        page.get_by_role("button", name=f"Open {name}").click()
        page.get_by_label("Merge into this person the person with id").fill(other)
        page.get_by_role("button", name="Merge", exact=True).click()
        page.wait_for_function("document.querySelectorAll('#person-templates li').length === 3")
        assert httpx.get(f"{service.url}/identities/{other}").status_code == 404

        # Metadata: text that is not a JSON object is refused before anything is sent; an object
        # is saved and read back.
        metadata = page.get_by_label("Metadata (a JSON object; empty for none)")
        refused = (('{"team": ', "Metadata must be a JSON object"), ("[1, 2]", "not [1,2]"))
        for text, said in refused:
            metadata.fill(text)
            page.get_by_role("button", name="Save metadata").click()
            assert said in page.locator("#error").inner_text()
        assert httpx.get(f"{service.url}/identities/{identity_id}").json()["metadata"] == {
            "team": "web test"
        }
        metadata.fill('{"team": "edited", "floor": 3}')
        page.get_by_role("button", name="Save metadata").click()
        page.get_by_text(f"Saved the metadata of {name}.").wait_for()
        assert page.is_hidden("#error")
        stored = httpx.get(f"{service.url}/identities/{identity_id}").json()["metadata"]
        assert stored == {"team": "edited", "floor": 3}
        assert json.loads(page.input_value("#person-metadata")) == stored

        page.get_by_label("New name").fill(f"Thomas Hanks {suffix}")
        page.get_by_role("button", name="Rename").click()
        page.locator("#person-title", has_text=f"Thomas Hanks {suffix}").wait_for()
        page.get_by_role("button", name="Delete photo hanks_second.jpg").click()
        page.wait_for_function("document.querySelectorAll('#person-templates li').length === 2")
        page.get_by_role("button", name="Delete this person").click()
        page.get_by_text(f"Deleted Thomas Hanks {suffix}.").wait_for()
        assert page.is_hidden("#person")
    assert browsing.refused == []
    assert httpx.get(f"{service.url}/identities/{identity_id}").status_code == 404


def test_find_faces_draws_and_crops(
    service: ServiceProcess, photos: dict[str, Path], tmp_path: Path
) -> None:
    with browse(service.url, tmp_path, width=390, height=844) as browsing:  # a phone's width
        page = browsing.page
        page.goto(f"{service.url}/")
        # The tabs follow the keyboard: focus one, arrow to the next.
        page.get_by_role("tab", name="Compare").focus()
        page.keyboard.press("ArrowRight")
        assert page.get_by_role("tab", name="Find faces").get_attribute("aria-selected") == "true"
        assert page.is_visible("#find-form")
        page.set_input_files("#find-image", str(wheel_photos()["gdp"]))
        page.get_by_label("Save a detection record (Records)").check()
        page.get_by_role("button", name="Find faces", exact=True).click()
        page.locator("#find-count").filter(has_text="found").wait_for()
        assert page.inner_text("#find-count") == "5 faces found"
        assert page.locator("#find-faces img").count() == 5
        assert page.inner_text("#find-record").startswith("Saved as record ")
        # Again without saving: the answer is this run's alone, no earlier run's record line.
        page.get_by_label("Save a detection record (Records)").uncheck()
        assert page.is_hidden("#find-result")
        page.get_by_role("button", name="Find faces", exact=True).click()
        page.locator("#find-result").wait_for()
        assert page.inner_text("#find-count") == "5 faces found"
        assert page.is_hidden("#find-record")
        assert page.get_by_text("Saved as record").count() == 0
        # Nothing wider than the phone: no sideways scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        browsing.screenshot("find-faces-phone")

        page.once("dialog", lambda dialog: dialog.accept())
        open_tab(page, "Records")
        page.get_by_label("File name contains").fill("gdp.jpg")
        page.get_by_role("button", name="Search", exact=True).last.click()
        row = page.locator("#records-list tr", has_text="gdp.jpg").first
        row.wait_for()
        faces = row.locator("td").nth(2)
        assert faces.inner_text() == "5"
        assert faces.get_attribute("data-label") == "Faces"  # shown beside it on a phone
        before = page.locator("#records-list tr").count()
        browsing.screenshot("records-phone")
        row.get_by_role("button", name="Delete record gdp.jpg").click()
        page.wait_for_function(
            f"document.querySelectorAll('#records-list tr').length === {before - 1}"
        )


def test_a_401_asks_for_a_key_and_sends_it(service: ServiceProcess, tmp_path: Path) -> None:
    """The page's side of the API-key contract, whatever the service's auth setting: a 401
    opens the key prompt; the key saved is sent as X-API-Key from then on."""
    sent: list[str | None] = []

    def require_key(route: Route) -> None:
        key = route.request.headers.get("x-api-key")
        sent.append(key)
        if key != "test-key":
            route.fulfill(status=401, json={"detail": "an API key is required"})
        else:
            route.continue_()

    with browse(service.url, tmp_path) as browsing:
        page = browsing.page
        page.route("**/identities?*", require_key)
        page.goto(f"{service.url}/")
        open_tab(page, "People")
        page.get_by_role("textbox", name="API key").wait_for()
        assert "needs an API key" in page.get_by_role("alert").inner_text()
        page.get_by_role("textbox", name="API key").fill("test-key")
        page.get_by_role("button", name="Save key").click()
        page.get_by_role("button", name="Search", exact=True).first.click()
        page.locator("#people-summary").filter(has_text="").wait_for()
        page.wait_for_function("document.getElementById('people-summary').textContent !== ''")
        assert page.evaluate("localStorage.getItem('faceServiceApiKey')") == "test-key"
        browsing.screenshot("api-key")
    assert sent[0] is None
    assert sent[-1] == "test-key"


@pytest.mark.parametrize(
    ("status", "detail", "headers", "message"),
    [
        (413, "'image_a' has 60000000 bytes; the limit is 20000000", {}, "Too large: 'image_a'"),
        (415, "'image_b' has content type 'text/plain'; send an image", {}, "Not an image:"),
        (422, "no face found in 'image_a'", {}, "No usable face: no face found in 'image_a'"),
        (
            422,
            [{"loc": ["body", "threshold"], "msg": "Input should be less than or equal to 1"}],
            {},
            "Please check the input: threshold: Input should be less than or equal to 1",
        ),
        (503, "the service is busy", {"Retry-After": "2"}, "busy or starting up: try again in 2"),
        (403, "this key lacks the write scope", {}, "not allowed to do this"),
    ],
)
def test_api_errors_become_clear_messages(
    service: ServiceProcess,
    photos: dict[str, Path],
    tmp_path: Path,
    status: int,
    detail: object,
    headers: dict[str, str],
    message: str,
) -> None:
    """Each error answer the API gives (here played back at the page) reads as a sentence."""
    with browse(service.url, tmp_path) as browsing:
        page = browsing.page
        page.route(
            "**/face-similarity",
            lambda route: route.fulfill(status=status, json={"detail": detail}, headers=headers),
        )
        page.goto(f"{service.url}/")
        page.set_input_files("#compare-a", str(photos["hanks"]))
        page.set_input_files("#compare-b", str(photos["yao"]))
        page.get_by_role("button", name="Compare", exact=True).click()
        alert = page.get_by_role("alert")
        alert.wait_for()
        assert message in alert.inner_text()
        assert page.get_by_role("button", name="Compare", exact=True).is_enabled()
