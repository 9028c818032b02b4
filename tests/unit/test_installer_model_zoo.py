"""The model installer's model zoo path (extract_insightface_models.py over
face_service.inference.model_packs), against a local HTTP server: a pack downloaded once and then
installed from the cache, a pack the server does not have, an answer that is not a zip, and an
archive that fails its CRC not trusted on the next run; the pack and zoo URL read from the
settings, and an unknown pack named there; and an installer that never loads the async HTTP
client. Every repository lives under tmp_path."""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

import extract_insightface_models as extract
from face_service.inference import model_packs
from face_service.settings import REPOSITORY_ROOT, Settings
from tests.unit.model_pack_support import (
    DETECTOR_FILE,
    RECOGNIZER_FILE,
    error_messages,
    install,
    model_path,
    parameters,
    read_config,
    read_manifest,
    save_model,
    sha256_bytes,
)

# 1. Model zoo download ---------------------------------------------------------------------------


@dataclass
class ZooServer:
    url: str
    directory: Path
    requests: list[tuple[str, str]] = field(default_factory=list)


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    recorded: list[tuple[str, str]]

    def do_GET(self) -> None:
        self.recorded.append(("GET", self.path))
        super().do_GET()

    def do_HEAD(self) -> None:
        self.recorded.append(("HEAD", self.path))
        super().do_HEAD()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def zoo(tmp_path: Path) -> Iterator[ZooServer]:
    directory = tmp_path / "zoo"
    directory.mkdir()
    recorded: list[tuple[str, str]] = []
    handler = type("Handler", (_RecordingHandler,), {"recorded": recorded})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ZooServer(f"http://127.0.0.1:{server.server_address[1]}", directory, recorded)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def build_buffalo_l_zip(zoo: ZooServer, vectron: Path, tmp_path: Path) -> Path:
    """The two buffalo_s files under buffalo_l's names, one nested, with a helper model and a
    small recognizer-shaped decoy."""
    decoy = save_model(tmp_path / "decoy.onnx", {"data": ["N", 3, 112, 112]}, {"fc": [1, 512]})
    path = zoo.directory / "buffalo_l.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.write(vectron / DETECTOR_FILE, "det_10g.onnx")
        archive.write(vectron / RECOGNIZER_FILE, "buffalo_l/w600k_r50.onnx")
        archive.write(vectron / "2d106det.onnx", "buffalo_l/2d106det.onnx")
        archive.write(decoy, "buffalo_l/extra/small_rec.onnx")
    return path


@pytest.mark.usefixtures("no_proxy")
def test_zoo_pack_is_downloaded_once_and_installed(
    zoo: ZooServer,
    tmp_path: Path,
    repository: Path,
    vectron: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build_buffalo_l_zip(zoo, vectron, tmp_path)
    cache = tmp_path / "cache"
    arguments = ("--pack", "buffalo_l", "--zoo-url", zoo.url + "/", "--cache-dir", str(cache))

    assert install(repository, *arguments) == 0
    assert zoo.requests == [("GET", "/buffalo_l.zip")]
    manifest = read_manifest(repository)
    assert manifest["pack"] == "buffalo_l"
    assert manifest["source"] == f"InsightFace model zoo {zoo.url}/buffalo_l.zip"
    assert manifest["similarity_threshold"] == pytest.approx(
        model_packs.PACKS["buffalo_l"].similarity_threshold
    )
    models = manifest["models"]
    assert models["face_detector"]["source_file"] == "det_10g.onnx"
    assert models["face_recognizer"]["source_file"] == "w600k_r50.onnx"
    assert models["face_detector"]["source_sha256"] == sha256_bytes(vectron / DETECTOR_FILE)
    assert models["face_recognizer"]["source_sha256"] == sha256_bytes(vectron / RECOGNIZER_FILE)
    assert (cache / "buffalo_l" / "buffalo_l" / "w600k_r50.onnx").is_file()
    assert (
        parameters(read_config(repository, "face_recognizer"))["face_service.pack"] == "buffalo_l"
    )

    mtime = model_path(repository, "face_recognizer").stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO, logger=model_packs.__name__)
    assert install(repository, *arguments) == 0
    assert zoo.requests == [("GET", "/buffalo_l.zip")]
    assert "downloading" not in caplog.text
    assert "model pack buffalo_l is already installed" in caplog.text
    assert model_path(repository, "face_recognizer").stat().st_mtime_ns == mtime


@pytest.mark.usefixtures("no_proxy")
def test_zoo_pack_that_is_not_served_fails(
    zoo: ZooServer, tmp_path: Path, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    arguments = ("--pack", "antelopev2", "--zoo-url", zoo.url, "--cache-dir", str(cache))
    assert install(repository, *arguments) == 2
    assert zoo.requests == [("GET", "/antelopev2.zip")]
    message = error_messages(caplog)
    assert f"cannot download model pack 'antelopev2' from {zoo.url}/antelopev2.zip" in message
    assert not (cache / "antelopev2").exists()
    assert not repository.exists()


@pytest.mark.usefixtures("no_proxy")
def test_zoo_answer_that_is_not_a_zip_fails(
    zoo: ZooServer, tmp_path: Path, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (zoo.directory / "buffalo_m.zip").write_bytes(b"<html>not a zip</html>")
    cache = tmp_path / "cache"
    arguments = ("--pack", "buffalo_m", "--zoo-url", zoo.url, "--cache-dir", str(cache))
    assert install(repository, *arguments) == 2
    assert "cannot download model pack 'buffalo_m'" in error_messages(caplog)
    assert not (cache / "buffalo_m").exists()


@pytest.mark.usefixtures("no_proxy")
def test_zoo_archive_that_fails_its_crc_is_not_trusted_later(
    zoo: ZooServer, tmp_path: Path, repository: Path, vectron: Path
) -> None:
    archive = build_buffalo_l_zip(zoo, vectron, tmp_path)
    good = archive.read_bytes()
    with zipfile.ZipFile(archive) as zipped:
        member = zipped.getinfo("buffalo_l/w600k_r50.onnx")
    corrupt = bytearray(good)
    # One flipped byte inside the stored recognizer's data: its CRC-32 no longer matches.
    corrupt[member.header_offset + 30 + len(member.filename) + 4096] ^= 0xFF
    archive.write_bytes(bytes(corrupt))
    cache = tmp_path / "cache"
    arguments = ("--pack", "buffalo_l", "--zoo-url", zoo.url, "--cache-dir", str(cache))
    assert install(repository, *arguments) == 2

    archive.write_bytes(good)
    assert install(repository, *arguments) == 0
    # The second run must fetch the pack again rather than install the corrupt recognizer.
    assert zoo.requests == [("GET", "/buffalo_l.zip")] * 2
    recognizer = read_manifest(repository)["models"]["face_recognizer"]
    assert recognizer["source_sha256"] == sha256_bytes(vectron / RECOGNIZER_FILE)


@pytest.mark.usefixtures("no_proxy")
def test_pack_and_zoo_url_come_from_the_settings(
    zoo: ZooServer,
    tmp_path: Path,
    repository: Path,
    vectron: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_buffalo_l_zip(zoo, vectron, tmp_path)
    monkeypatch.setenv("FACE_MODEL_PACK", "buffalo_l")
    monkeypatch.setenv("FACE_MODEL_ZOO_URL", zoo.url)
    monkeypatch.setattr(extract, "get_settings", Settings)  # not the cached ones
    assert install(repository, "--cache-dir", str(tmp_path / "cache")) == 0
    assert zoo.requests == [("GET", "/buffalo_l.zip")]
    assert read_manifest(repository)["pack"] == "buffalo_l"


def test_unknown_pack_in_the_settings_fails_naming_the_known_ones(
    repository: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FACE_MODEL_PACK", "buffalo_xl")
    monkeypatch.setattr(extract, "get_settings", Settings)
    assert install(repository) == 2
    assert "unknown model pack 'buffalo_xl'; known: antelopev2, buffalo_l" in error_messages(caplog)
    assert not repository.exists()


def test_installer_never_loads_the_http_client(tmp_path: Path) -> None:
    """The installer writes files: it must not pay for (or depend on) the async HTTP client."""
    script = (
        "import json, sys\n"
        "import extract_insightface_models\n"
        "loaded = lambda: sorted(m for m in ('tritonclient.http', 'aiohttp') if m in sys.modules)\n"
        "imported = loaded()\n"
        f"code = extract_insightface_models.main(['--repository', {str(tmp_path)!r}])\n"
        "print(json.dumps([imported, code, loaded()]))\n"
    )
    # From the checkout's root, so that this checkout's modules are the ones imported.
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    imported, code, after_install = json.loads(found.stdout.splitlines()[-1])
    assert code == 0
    assert imported == []
    assert after_install == []
