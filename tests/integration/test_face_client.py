"""The Python client (face_client) against the real service: every route, typed results that
hold the real values, the API's errors as typed exceptions (400, 404, 409, 413, 415, 422, 503
under admission), 503 retried after Retry-After until it succeeds, and - once the service has
API keys (issue 10) - 401, 403, key management and the audit log."""

from __future__ import annotations

import asyncio
import base64
import io
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from face_client import (
    NO_RETRY,
    AsyncClient,
    BadRequest,
    Client,
    Conflict,
    FaceAPIError,
    Forbidden,
    NotFound,
    RetryPolicy,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMedia,
)
from face_client.calls import Call, model
from face_client.models import Embedding
from face_service.testing.service_process import ServiceProcess
from tests.integration.face_client_support import (
    ADMIN_KEY,
    blank_png,
    client_service,
    has_face_crops,
    has_key_routes,
    person_photos,
)

MAX_IMAGE_BYTES = 3_000_000


@pytest.fixture(scope="module")
def api_service(
    service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    # One request at a time and no queue: a second concurrent request is refused with 503.
    with client_service(
        service,
        tmp_path_factory.mktemp("face-client"),
        FACE_MAX_CONCURRENT_REQUESTS="1",
        FACE_MAX_QUEUED_REQUESTS="0",
        FACE_MAX_IMAGE_BYTES=str(MAX_IMAGE_BYTES),
    ) as running:
        yield running


@pytest.fixture
def face(api_service: ServiceProcess) -> Iterator[Client]:
    with Client(api_service.url, api_key=ADMIN_KEY, timeout_s=120) as client:
        yield client


@pytest.fixture(scope="module")
def amanda() -> list[Path]:
    return person_photos("Amanda_Beard")


@pytest.fixture(scope="module")
def cuomo() -> list[Path]:
    return person_photos("Andrew_Cuomo")


def test_health_liveness_embedding_similarity_and_draw(
    face: Client, amanda: list[Path], cuomo: list[Path], photos: dict[str, Path]
) -> None:
    health = face.health()
    assert (health.ready, health.triton) == (True, True)
    assert set(health.models.values()) == {True}
    assert face.live().status == "alive"

    embedding = face.embedding(photos["yaoming"])
    assert len(embedding.embedding) == 512
    assert abs(sum(v * v for v in embedding.embedding) - 1) < 1e-3
    assert embedding.faces_detected == 1
    assert 0.5 < embedding.face.det_score <= 1
    assert len(embedding.face.landmarks) == 5

    same = face.face_similarity(amanda[0], amanda[1])
    other = face.compare(amanda[0], cuomo[0])
    assert same.same_person
    assert same.similarity > same.threshold
    assert not other.same_person
    assert other.similarity < other.threshold
    strict = face.face_similarity(amanda[0], amanda[1], threshold=0.99)
    assert (strict.threshold, strict.same_person) == (0.99, False)

    drawing = face.draw(photos["t1"])
    assert drawing.jpeg[:3] == b"\xff\xd8\xff"
    assert drawing.faces_detected == 6


def test_extract_multipart_and_json_and_detection_records(
    face: Client, photos: dict[str, Path]
) -> None:
    result = face.extract([photos["gdp"], ("broken.jpg", b"not an image")], limit_faces=3)
    ok, broken = result.images
    assert (ok.status, len(ok.faces)) == ("ok", 3)
    assert (ok.width, ok.height) == Image.open(photos["gdp"]).size
    assert len(ok.faces[0].embedding or []) == 512
    assert broken.status == "error"
    assert "not an image" in (broken.error or "")

    as_json = face.extract(
        [photos["yaoming"]], as_json=True, return_embedding=False, return_face_crops=True
    )
    multipart = face.extract([photos["yaoming"]], return_embedding=False)
    [json_face], [multipart_face] = as_json.images[0].faces, multipart.images[0].faces
    assert json_face.bbox == multipart_face.bbox
    assert json_face.embedding is None
    assert base64.b64decode(json_face.crop or "")[:3] == b"\xff\xd8\xff"  # the aligned face

    stored = face.extract([("client-record.jpg", photos["yaoming"].read_bytes())], store=True)
    record_id = stored.images[0].record_id
    assert record_id
    page = face.list_records(filename="client-record")
    assert [r.record_id for r in page.items] == [record_id]
    record = face.get_record(record_id)
    assert (record.filename, len(record.faces)) == ("client-record.jpg", 1)
    face.delete_record(record_id)
    with pytest.raises(NotFound, match=record_id):
        face.get_record(record_id)


def test_identities_enroll_add_list_patch_templates_merge_and_delete(
    face: Client, amanda: list[Path], cuomo: list[Path]
) -> None:
    enrolled = face.enroll(
        [amanda[0], ("wall.png", blank_png())],
        identity_id="amanda",
        name="Amanda Beard",
        metadata={"sport": "swimming"},
    )
    assert [i.status for i in enrolled.images] == ["enrolled", "skipped"]
    assert enrolled.images[1].reason == "no face found"
    assert [t.source for t in enrolled.identity.templates] == ["1.jpg"]
    with pytest.raises(Conflict, match="already exists") as conflict:
        face.enroll([amanda[1]], identity_id="amanda")
    assert conflict.value.status == 409
    with pytest.raises(Unprocessable, match="no usable face"):
        face.enroll([("wall.png", blank_png())], identity_id="nobody")

    added = face.add_images("amanda", [amanda[1]])
    assert [t.source for t in added.identity.templates] == ["1.jpg", "2.jpg"]
    assert face.get_identity("amanda").metadata == {"sport": "swimming"}
    renamed = face.update_identity("amanda", name="A. Beard", metadata={"sport": "swim"})
    assert (renamed.name, renamed.metadata) == ("A. Beard", {"sport": "swim"})
    assert face.update_identity("amanda", name=None).name is None
    assert face.update_identity("amanda", name="Amanda Beard").metadata == {"sport": "swim"}

    face.enroll(cuomo, identity_id="cuomo", name="Andrew Cuomo")
    page = face.list_identities(name="cuomo")
    assert [i.identity_id for i in page.items] == ["cuomo"]
    assert {i.identity_id for i in face.iter_identities(page_size=1)} >= {"amanda", "cuomo"}

    first = added.identity.templates[0].template_id
    assert [t.source for t in face.delete_template("amanda", first).templates] == ["2.jpg"]
    with pytest.raises(NotFound, match="no template"):
        face.delete_template("amanda", first)

    face.enroll([amanda[0]], identity_id="amanda-2")
    merged = face.merge("amanda", "amanda-2")
    assert sorted(t.source or "" for t in merged.templates) == ["1.jpg", "2.jpg"]
    with pytest.raises(NotFound, match="'amanda-2' does not exist"):
        face.get_identity("amanda-2")
    with pytest.raises(Unprocessable, match="itself"):
        face.merge("amanda", "amanda")

    face.delete_identity("cuomo")
    with pytest.raises(NotFound):
        face.delete_identity("cuomo")


def test_identify_and_verify_by_image_and_by_embedding(
    face: Client, amanda: list[Path], cuomo: list[Path]
) -> None:
    face.enroll(amanda[:1], identity_id="amanda-v", name="Amanda V")
    found = face.identify(amanda[1], top_k=3)
    best = max(found.faces, key=lambda f: f.det_score or 0)
    assert best.match is not None
    assert best.match.identity_id in {"amanda", "amanda-v"}
    assert best.match.similarity >= found.threshold
    stranger = face.identify(cuomo[1], threshold=0.99)
    assert all(f.match is None for f in stranger.faces)

    vector = face.embedding(amanda[1]).embedding
    by_vector = face.identify_embedding(vector, top_k=2)
    assert by_vector.faces[0].match is not None
    assert by_vector.faces[0].match.identity_id in {"amanda", "amanda-v"}

    verified = face.verify(amanda[1], "amanda-v")
    assert verified.verified
    assert verified.face is not None
    assert not face.verify(cuomo[0], "amanda-v").verified
    assert face.verify_embedding(vector, "amanda-v").similarity == pytest.approx(
        verified.similarity, abs=1e-4
    )
    with pytest.raises(NotFound, match="does not exist"):
        face.verify(amanda[1], "no-such-person")
    with pytest.raises(Unprocessable) as wrong_width:
        face.identify_embedding([0.1, 0.2, 0.3])
    assert wrong_width.value.status == 422


def test_a_templates_face_crop(
    api_service: ServiceProcess, face: Client, amanda: list[Path]
) -> None:
    assert has_face_crops(api_service.url), "the service has no face-crop route"
    enrolled = face.enroll(amanda[:1], identity_id="with-face")
    template_id = enrolled.identity.templates[0].template_id
    jpeg = face.template_image("with-face", template_id)
    assert Image.open(io.BytesIO(jpeg)).size == (112, 112)
    with pytest.raises(NotFound):
        face.template_image("with-face", "no-such-template")


def test_the_api_errors_arrive_as_typed_exceptions(face: Client, amanda: list[Path]) -> None:
    with pytest.raises(BadRequest, match="not an image") as unreadable:
        face.embedding(("broken.jpg", b"not an image"))
    assert unreadable.value.status == 400
    with pytest.raises(Unprocessable, match="no face found in 'image'"):
        face.embedding(("wall.png", blank_png()))
    with pytest.raises(TooLarge) as too_large:
        face.embedding(("huge.jpg", b"\xff\xd8" + b"0" * MAX_IMAGE_BYTES))
    assert too_large.value.status == 413
    text_file = Call(
        "POST",
        "/embedding",
        model(Embedding),
        files=[("image", ("notes.txt", b"hello", "text/plain"))],
    )
    with pytest.raises(UnsupportedMedia, match="text/plain") as unsupported:
        face.send(text_file)
    assert unsupported.value.status == 415
    with pytest.raises(Unprocessable) as invalid:
        face.identify(amanda[0], top_k=500)
    assert invalid.value.errors[0]["loc"][-1] == "top_k"
    assert invalid.value.detail.startswith("top_k: ")


def test_delete_all_needs_the_confirmation_the_service_names(
    face: Client, amanda: list[Path]
) -> None:
    face.enroll(amanda[:1], identity_id="to-delete")
    with pytest.raises(BadRequest, match="confirm=") as refused:
        face.delete_all_identities(confirm="no")
    # The value the service asks for: 'true' before issue 10, an explicit phrase after.
    value = re.search(r"confirm=(\S+)", refused.value.detail)
    assert value
    deleted = face.delete_all_identities(confirm=value.group(1))
    assert deleted.deleted >= 1
    assert face.list_identities().total == 0


def test_503_under_admission_is_retried_after_retry_after(
    api_service: ServiceProcess, photos: dict[str, Path]
) -> None:
    """One request at a time, no queue: concurrent requests are refused with 503 and
    Retry-After; without retries some fail, with them every one succeeds."""
    image = photos["t1"].read_bytes()

    def burst(retry: RetryPolicy) -> list[object]:
        with Client(api_service.url, api_key=ADMIN_KEY, retry=retry, timeout_s=120) as face:

            def one(_: int) -> object:
                try:
                    return face.extract([("t1.jpg", image)], auto_rotate=True).images[0].status
                except FaceAPIError as error:
                    return error

            with ThreadPoolExecutor(6) as pool:
                return list(pool.map(one, range(6)))

    refused = [r for r in burst(NO_RETRY) if isinstance(r, FaceAPIError)]
    assert refused, "six concurrent requests on one admission slot should see a 503"
    assert all(isinstance(r, Unavailable) and r.retry_after_s is not None for r in refused)
    patient = burst(RetryPolicy(attempts=40, max_total_s=120))
    assert patient == ["ok"] * 6


def test_the_async_client_against_the_service(
    api_service: ServiceProcess, amanda: list[Path]
) -> None:
    async def scenario() -> list[float]:
        retry = RetryPolicy(attempts=40, max_total_s=120)
        async with AsyncClient(api_service.url, api_key=ADMIN_KEY, retry=retry) as face:
            results = await asyncio.gather(*(face.embedding(p) for p in amanda[:2]))
            similarity = await face.face_similarity(amanda[0], amanda[1])
            assert similarity.same_person
            with pytest.raises(NotFound):
                await face.get_identity("nobody-async")
            return [len(r.embedding) for r in results]

    assert asyncio.run(scenario()) == [512, 512]


@pytest.fixture
def key_routes(api_service: ServiceProcess) -> None:
    assert has_key_routes(api_service.url), "the service has no key routes"


@pytest.mark.usefixtures("key_routes")
def test_keys_scopes_and_the_audit_log(
    api_service: ServiceProcess, face: Client, amanda: list[Path]
) -> None:
    created = face.create_key("client-reader", ["read"])
    assert created.key
    assert created.scopes == ["read"]
    listed = {k.key_id: k for k in face.list_keys()}
    assert created.key_id in listed
    assert "key" not in listed[created.key_id].model_dump()

    with Client(api_service.url, retry=NO_RETRY) as anonymous, pytest.raises(Unauthorized):
        anonymous.list_identities()
    wrong = Client(api_service.url, api_key="not-a-key", retry=NO_RETRY)
    with wrong, pytest.raises(Unauthorized) as unauthorized:
        wrong.list_identities()
    assert unauthorized.value.status == 401
    with Client(api_service.url, api_key=created.key, retry=NO_RETRY) as reader:
        assert reader.list_identities().total >= 0
        with pytest.raises(Forbidden) as forbidden:
            reader.enroll(amanda[:1], identity_id="reader-try")
        assert forbidden.value.status == 403
        with pytest.raises(Forbidden):
            reader.list_keys()

    face.enroll(amanda[:1], identity_id="audited")
    face.delete_identity("audited")
    audit = face.audit(target="audited")
    assert audit.total >= 1
    assert {e.action for e in audit.items} >= {"identity.delete"}
    assert all(e.principal for e in audit.items)

    revoked = face.revoke_key(created.key_id)
    assert revoked.revoked_at is not None
    reader = Client(api_service.url, api_key=created.key, retry=NO_RETRY)
    with reader, pytest.raises(Unauthorized):
        reader.list_identities()
