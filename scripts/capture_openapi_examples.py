"""Captures the OpenAPI document's response examples from a running service (real answers to
real photos), into face_service/api/openapi_examples.json. Run it after an API change:

    python scripts/capture_openapi_examples.py --url http://127.0.0.1:3000

It enrolls one identity from the wheels' photos and deletes it again."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.photos import wheel_photos  # noqa: E402 - the repository root is on the path now

IDENTITY_ID = "yao-ming"  # the examples of the routes that need an enrolled person name it
OUTPUT = ROOT / "face_service" / "api" / "openapi_examples.json"


def files(field: str, *paths: Path) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [(field, (path.name, path.read_bytes(), "image/jpeg")) for path in paths]


def capture(client: httpx.Client) -> dict[str, dict[str, object]]:
    photos = wheel_photos()
    hanks, yao = photos["tom_hanks"], photos["yaoming"]
    answers: dict[str, dict[str, object]] = {}

    def keep(method: str, path: str, response: httpx.Response) -> dict:
        response.raise_for_status()
        answers.setdefault(path, {})[method] = response.json()
        return response.json()

    embedding = keep("post", "/embedding", client.post("/embedding", files=files("image", yao)))
    keep(
        "post",
        "/face-similarity",
        client.post("/face-similarity", files=files("image_a", hanks) + files("image_b", yao)),
    )
    extracted = keep(
        "post",
        "/extract",
        client.post("/extract", files=files("images", yao), data={"return_embedding": "false"}),
    )
    crop = client.post(
        "/extract", files=files("images", yao), data={"return_face_crops": "true"}
    ).json()["images"][0]["faces"][0]["crop"]
    answers["/extract"]["request-json"] = {"images": {"data": [crop]}, "return_embedding": False}
    assert extracted["images"][0]["status"] == "ok"
    client.delete(f"/identities/{IDENTITY_ID}")
    enrolled = keep(
        "post",
        "/identities",
        client.post(
            "/identities",
            files=files("images", yao, photos["gdp"]),
            data={
                "identity_id": IDENTITY_ID,
                "name": "Yao Ming",
                "metadata": json.dumps({"team": "Houston Rockets"}),
            },
        ),
    )
    identity_id = enrolled["identity"]["identity_id"]
    try:
        keep("get", "/identities", client.get("/identities", params={"limit": 1}))
        keep("get", "/identities/{identity_id}", client.get(f"/identities/{identity_id}"))
        keep("post", "/identify", client.post("/identify", files=files("image", yao)))
        keep(
            "post",
            "/identify/embedding",
            client.post("/identify/embedding", json={"embedding": embedding["embedding"]}),
        )
        answers["/identify/embedding"]["request-json"] = {
            "embedding": embedding["embedding"],
            "top_k": 5,
        }
        keep(
            "post",
            "/verify",
            client.post("/verify", files=files("image", yao), data={"identity_id": identity_id}),
        )
        verify_body = {"embedding": embedding["embedding"], "identity_id": identity_id}
        keep("post", "/verify/embedding", client.post("/verify/embedding", json=verify_body))
        answers["/verify/embedding"]["request-json"] = verify_body
    finally:
        client.delete(f"/identities/{identity_id}")
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    arguments = parser.parse_args()
    with httpx.Client(base_url=arguments.url, timeout=120) as client:
        answers = capture(client)
    OUTPUT.write_text(json.dumps(answers, indent=1) + "\n")
    print(f"wrote {OUTPUT}")  # noqa: T201 - a script's result


if __name__ == "__main__":
    main()
