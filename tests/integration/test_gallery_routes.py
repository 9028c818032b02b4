"""The gallery routes against the real service, on both backends: an API process on the
embedded SQLite gallery and one on a real PostgreSQL + pgvector, both on the session's Triton."""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageOps

from face_service.testing.service_process import ServiceProcess


def jpeg(image: Image.Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def people(photos: dict[str, Path]) -> dict[str, list[bytes]]:
    """Photos of distinct people: yaoming in three variants, and single-person crops of
    faces of t1.jpg (a group of 6) and gdp.jpg (5), two variants each."""
    yao = Image.open(photos["yaoming"])
    result = {
        "yao": [
            jpeg(yao),
            jpeg(ImageOps.mirror(yao)),
            jpeg(yao.resize((yao.width * 3 // 2, yao.height * 3 // 2))),
        ]
    }
    # Face boxes of t1.jpg and gdp.jpg (from /extract), widened to head-and-shoulders crops.
    for photo, prefix, boxes in (
        ("t1", "t1", [(745, 342, 847, 480), (464, 266, 573, 415), (56, 261, 169, 398)]),
        ("gdp", "gdp", [(348, 116, 413, 206), (129, 38, 194, 118)]),
    ):
        image = Image.open(photos[photo])
        for index, (x1, y1, x2, y2) in enumerate(boxes):
            w, h = x2 - x1, y2 - y1
            crop = image.crop((max(0, x1 - w), max(0, y1 - h), x2 + w, y2 + h))
            result[f"{prefix}_{index}"] = [jpeg(crop), jpeg(ImageOps.mirror(crop))]
    return result


def start_gallery_service(
    backend: str, service: ServiceProcess, work_dir: Path, postgres_url: str
) -> ServiceProcess:
    env = {"FACE_DATA_DIR": str(work_dir / "data")}
    if backend == "postgres":
        env["FACE_GALLERY_DATABASE_URL"] = postgres_url
    return ServiceProcess(api_port=0, triton_url=service.triton_address, work_dir=work_dir, env=env)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def gallery_service(
    request: pytest.FixtureRequest,
    service: ServiceProcess,
    postgres_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServiceProcess]:
    work_dir = tmp_path_factory.mktemp(f"gallery-{request.param}")
    with start_gallery_service(request.param, service, work_dir, postgres_url) as running:
        yield running


@pytest.fixture
def gallery_api(gallery_service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gallery_service.url, timeout=120) as client:
        wiped = client.delete("/identities", params={"confirm": "delete-all-identities"})
        assert wiped.status_code == 200
        yield client


def enroll(api: httpx.Client, images: list[bytes], expect: int = 201, **fields: str) -> dict:
    files = [("images", (f"photo{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    response = api.post("/identities", files=files, data=fields)
    assert response.status_code == expect, response.text
    return response.json()


def embedding_of(api: httpx.Client, data: bytes) -> list[float]:
    response = api.post("/embedding", files={"image": ("x.jpg", data, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()["embedding"]


def test_enroll_reports_each_image_and_stores_one_template_per_usable_image(
    gallery_api: httpx.Client, people: dict[str, list[bytes]], photos: dict[str, Path]
) -> None:
    images = [*people["yao"][:2], b"not an image", photos["gdp"].read_bytes()]
    body = enroll(
        gallery_api, images, identity_id="yao-ming", name="Yao Ming", metadata='{"team": "Rockets"}'
    )
    identity = body["identity"]
    assert identity["identity_id"] == "yao-ming"
    assert (identity["name"], identity["metadata"]) == ("Yao Ming", {"team": "Rockets"})
    statuses = [(r["index"], r["status"]) for r in body["images"]]
    assert statuses == [(0, "enrolled"), (1, "enrolled"), (2, "skipped"), (3, "skipped")]
    assert "not an image" in body["images"][2]["reason"]
    assert "none clearly the subject" in body["images"][3]["reason"]
    assert {t["template_id"] for t in identity["templates"]} == {
        r["template_id"] for r in body["images"][:2]
    }
    assert [t["source"] for t in identity["templates"]] == ["photo0.jpg", "photo1.jpg"]
    assert gallery_api.get("/identities/yao-ming").json() == identity


def test_enroll_errors(gallery_api: httpx.Client, people: dict[str, list[bytes]]) -> None:
    enroll(gallery_api, people["yao"][:1], identity_id="taken")
    duplicate = enroll(gallery_api, people["t1_0"][:1], expect=409, identity_id="taken")
    assert duplicate["detail"] == "identity 'taken' already exists"
    nothing = enroll(gallery_api, [b"garbage", b""], expect=422, identity_id="nobody")
    assert "no usable face in any image" in nothing["detail"]
    assert gallery_api.get("/identities/nobody").status_code == 404
    for field, value in [
        ("identity_id", "has space"),
        ("identity_id", "x" * 200),
        ("name", "tab\there"),
        ("name", "n" * 201),
        ("metadata", "[1, 2]"),
        ("metadata", "{not json"),
        ("metadata", json.dumps({"k": "v" * 20000})),
        ("unknown", "1"),
    ]:
        response = gallery_api.post(
            "/identities",
            files=[("images", ("a.jpg", people["yao"][0], "image/jpeg"))],
            data={field: value},
        )
        assert response.status_code == 422, (field, value, response.text)
        assert response.json()["detail"][0]["loc"] == ["body", field]
    generated = enroll(gallery_api, people["t1_1"][:1])["identity"]["identity_id"]
    assert len(generated) == 32


def test_identify_names_enrolled_faces_and_leaves_strangers_unknown(
    gallery_api: httpx.Client, people: dict[str, list[bytes]], photos: dict[str, Path]
) -> None:
    for person in ("t1_0", "t1_1", "yao"):
        enroll(gallery_api, people[person][1:], identity_id=person, name=person.upper())
    response = gallery_api.post(
        "/identify",
        files={"image": ("t1.jpg", photos["t1"].read_bytes(), "image/jpeg")},
        data={"top_k": "2"},
    )
    assert response.status_code == 200, response.text
    faces = response.json()["faces"]
    assert len(faces) == 6
    matched = sorted(f["match"]["identity_id"] for f in faces if f["match"])
    assert matched == ["t1_0", "t1_1"]
    for face in faces:
        assert len(face["candidates"]) == 2
        assert face["candidates"][0]["similarity"] >= face["candidates"][1]["similarity"]
        if face["match"]:
            assert face["match"]["similarity"] >= response.json()["threshold"]
            assert face["match"]["name"] == face["match"]["identity_id"].upper()
        else:
            assert face["candidates"][0]["similarity"] < response.json()["threshold"]


def test_verify_and_the_embedding_variants(
    gallery_api: httpx.Client, people: dict[str, list[bytes]]
) -> None:
    enroll(gallery_api, people["yao"][:2], identity_id="yao")
    enroll(gallery_api, people["gdp_0"], identity_id="other")
    probe = people["yao"][2]
    same = gallery_api.post(
        "/verify", files={"image": ("p.jpg", probe, "image/jpeg")}, data={"identity_id": "yao"}
    )
    assert same.status_code == 200, same.text
    assert same.json()["verified"] is True
    assert same.json()["similarity"] > 0.6
    different = gallery_api.post(
        "/verify", files={"image": ("p.jpg", probe, "image/jpeg")}, data={"identity_id": "other"}
    ).json()
    assert different["verified"] is False
    missing = gallery_api.post(
        "/verify", files={"image": ("p.jpg", probe, "image/jpeg")}, data={"identity_id": "ghost"}
    )
    assert missing.status_code == 404

    embedding = embedding_of(gallery_api, probe)
    by_vector = gallery_api.post(
        "/verify/embedding", json={"embedding": embedding, "identity_id": "yao"}
    ).json()
    assert by_vector["similarity"] == pytest.approx(same.json()["similarity"], abs=1e-4)
    identified = gallery_api.post(
        "/identify/embedding", json={"embedding": embedding, "top_k": 5}
    ).json()
    [face] = identified["faces"]
    assert face["match"]["identity_id"] == "yao"
    assert [c["identity_id"] for c in face["candidates"]] == ["yao", "other"]
    # A vector far from everyone: no match.
    stranger = (-np.array(embedding)).tolist()
    assert (
        gallery_api.post("/identify/embedding", json={"embedding": stranger}).json()["faces"][0][
            "match"
        ]
        is None
    )
    for bad in ([0.0] * 512, [1.0] * 10):
        assert gallery_api.post("/identify/embedding", json={"embedding": bad}).status_code == 422


def test_identify_and_verify_need_multipart_like_every_upload_route(
    gallery_api: httpx.Client,
) -> None:
    for path in ("/identify", "/verify", "/identities", "/identities/someone/images"):
        response = gallery_api.post(path, json={"image": "abc", "identity_id": "someone"})
        assert response.status_code == 415, (path, response.text)
        assert "multipart/form-data" in response.json()["detail"]


def test_manage_templates_names_pages_and_deletion(
    gallery_api: httpx.Client, people: dict[str, list[bytes]]
) -> None:
    identity = enroll(gallery_api, people["yao"][:1], identity_id="yao", name="Yao")["identity"]
    added = gallery_api.post(
        "/identities/yao/images", files=[("images", ("more.jpg", people["yao"][1], "image/jpeg"))]
    )
    assert added.status_code == 200, added.text
    templates = added.json()["identity"]["templates"]
    assert len(templates) == 2
    assert added.json()["images"][0]["template_id"] == templates[1]["template_id"]
    removed = gallery_api.delete(f"/identities/yao/templates/{templates[0]['template_id']}")
    assert [t["template_id"] for t in removed.json()["templates"]] == [templates[1]["template_id"]]
    assert gallery_api.delete("/identities/yao/templates/nope").status_code == 404
    assert (
        gallery_api.post(
            "/identities/ghost/images",
            files=[("images", ("x.jpg", people["yao"][0], "image/jpeg"))],
        ).status_code
        == 404
    )

    patched = gallery_api.patch("/identities/yao", json={"metadata": {"a": 1}}).json()
    assert (patched["name"], patched["metadata"]) == ("Yao", {"a": 1})
    assert gallery_api.patch("/identities/yao", json={"name": None}).json()["name"] is None
    assert gallery_api.patch("/identities/yao", json={"bogus": 1}).status_code == 422
    assert gallery_api.patch("/identities/ghost", json={"name": "x"}).status_code == 404
    assert identity["created_at"] == patched["created_at"]

    for i, person in enumerate(["t1_0", "t1_1", "t1_2"]):
        enroll(gallery_api, people[person][:1], identity_id=f"p{i}", name=f"Person {i}")
    page = gallery_api.get("/identities", params={"limit": 2, "offset": 1}).json()
    assert page["total"] == 4
    assert [item["identity_id"] for item in page["items"]] == ["p0", "p1"]
    filtered = gallery_api.get("/identities", params={"name": "PERSON 2"}).json()
    assert [item["identity_id"] for item in filtered["items"]] == ["p2"]

    assert gallery_api.delete("/identities/p2").status_code == 204
    assert gallery_api.get("/identities/p2").status_code == 404
    assert gallery_api.delete("/identities/p2").status_code == 404
    refused = gallery_api.delete("/identities")
    assert refused.status_code == 400
    assert "confirm=delete-all-identities" in refused.json()["detail"]
    # Any truthy value is not the confirmation: only the phrase is.
    for value in ("true", "1", "yes"):
        assert gallery_api.delete("/identities", params={"confirm": value}).status_code == 400
    assert gallery_api.get("/identities").json()["total"] == 3
    wiped = gallery_api.delete("/identities", params={"confirm": "delete-all-identities"})
    assert wiped.json() == {"deleted": 3}
    assert gallery_api.get("/identities").json()["total"] == 0


def test_merge_moves_templates_and_removes_the_source(
    gallery_api: httpx.Client, people: dict[str, list[bytes]]
) -> None:
    enroll(gallery_api, people["yao"][:1], identity_id="a")
    source = enroll(gallery_api, people["yao"][1:], identity_id="b")["identity"]
    merged = gallery_api.post("/identities/a/merge", json={"source_id": "b"})
    assert merged.status_code == 200, merged.text
    moved = {t["template_id"] for t in source["templates"]}
    assert moved <= {t["template_id"] for t in merged.json()["templates"]}
    assert len(merged.json()["templates"]) == 3
    assert gallery_api.get("/identities/b").status_code == 404
    assert gallery_api.post("/identities/a/merge", json={"source_id": "a"}).status_code == 422
    assert gallery_api.post("/identities/a/merge", json={"source_id": "b"}).status_code == 404
    assert gallery_api.post("/identities/zz/merge", json={"source_id": "a"}).status_code == 404


def test_detection_records(gallery_api: httpx.Client, photos: dict[str, Path]) -> None:
    response = gallery_api.post(
        "/extract",
        files=[("images", ("x.jpg", photos["gdp"].read_bytes(), "image/jpeg"))],
        data={"store": "true", "filename": "events/2026/gdp-summit.jpg"},
    )
    assert response.status_code == 200, response.text
    [image] = response.json()["images"]
    record_id = image["record_id"]
    found = gallery_api.get("/records", params={"filename": "gdp-SUMMIT"}).json()
    assert found["total"] == 1
    record = gallery_api.get(f"/records/{record_id}").json()
    assert record == found["items"][0]
    assert (record["filename"], record["width"], record["height"], record["channels"]) == (
        "events/2026/gdp-summit.jpg",
        image["width"],
        image["height"],
        3,
    )
    assert len(record["faces"]) == 5
    assert record["faces"][0]["bbox"] == image["faces"][0]["bbox"]
    assert len(record["faces"][0]["embedding"]) == 512
    assert gallery_api.get("/records", params={"filename": "nothing-like-it"}).json()["total"] == 0
    assert gallery_api.delete(f"/records/{record_id}").status_code == 204
    assert gallery_api.get(f"/records/{record_id}").status_code == 404


def test_concurrent_enroll_delete_and_merge_leave_the_gallery_consistent(
    gallery_api: httpx.Client, gallery_service: ServiceProcess, people: dict[str, list[bytes]]
) -> None:
    persons = ["yao", "t1_0", "t1_1", "t1_2", "gdp_0", "gdp_1"]

    def work(step: int) -> int:
        person = persons[step % len(persons)]
        with httpx.Client(base_url=gallery_service.url, timeout=120) as client:
            if step % 3 == 0:
                return enroll_status(client, person, step, people)
            if step % 3 == 1:
                return client.delete(f"/identities/{person}-{step - 1}").status_code
            return client.post(
                f"/identities/{person}-{step - 2}/merge", json={"source_id": f"{person}-{step - 5}"}
            ).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(work, range(36)))
    assert set(codes) <= {200, 201, 204, 404}
    listing = gallery_api.get("/identities", params={"limit": 1000}).json()
    assert listing["total"] == len(listing["items"])
    for item in listing["items"]:
        assert gallery_api.get(f"/identities/{item['identity_id']}").json() == item
        for template in item["templates"]:
            # Every template still identifies its owner.
            assert template["template_id"]
    probe = embedding_of(gallery_api, people["yao"][2])
    top = gallery_api.post("/identify/embedding", json={"embedding": probe, "top_k": 100}).json()
    listed_ids = {item["identity_id"] for item in listing["items"]}
    assert {c["identity_id"] for c in top["faces"][0]["candidates"]} == listed_ids


def enroll_status(
    client: httpx.Client, person: str, step: int, people: dict[str, list[bytes]]
) -> int:
    files = [("images", ("p.jpg", people[person][0], "image/jpeg"))]
    return client.post(
        "/identities", files=files, data={"identity_id": f"{person}-{step}"}
    ).status_code


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_right_after_201_loses_nothing(
    backend: str,
    service: ServiceProcess,
    postgres_url: str,
    people: dict[str, list[bytes]],
    tmp_path: Path,
) -> None:
    first = start_gallery_service(backend, service, tmp_path, postgres_url)
    first.api_port += 10
    with first, httpx.Client(base_url=first.url, timeout=120) as client:
        body = enroll(client, people["gdp_1"][:1], identity_id=f"durable-{backend}", name="Durable")
        assert first.process is not None
        os.kill(first.process.pid, signal.SIGKILL)
        first.process.wait()
    second = start_gallery_service(backend, service, tmp_path, postgres_url)
    second.api_port += 10
    with second, httpx.Client(base_url=second.url, timeout=120) as client:
        found = client.get(f"/identities/durable-{backend}")
        assert found.status_code == 200
        assert found.json() == body["identity"]
        probe = embedding_of(client, people["gdp_1"][1])
        match = client.post("/identify/embedding", json={"embedding": probe}).json()["faces"][0][
            "match"
        ]
        assert match["identity_id"] == f"durable-{backend}"
        client.delete(f"/identities/durable-{backend}")
