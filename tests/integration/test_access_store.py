"""The API key store and the audit log on every backend (the ``store`` fixture: SQLite, PostgreSQL,
partitioned PostgreSQL), in the gallery's own database: keys created, listed without secrets,
found by id, revoked; names unique among active keys; the audit log paged and filtered; no key
text anywhere in the database; the database unusable -> GalleryError."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

from face_service.auth import Authenticator
from face_service.errors import (
    AuthenticationError,
    GalleryError,
    KeyNameExistsError,
    KeyNotFoundError,
)
from face_service.gallery import AccessStore, AuditEntry, AuditFilter
from face_service.gallery.access_backends import PostgresAccessStore, SQLiteAccessStore
from tests.integration.gallery_support import Store, axis, enroll, is_utc

SECRET = b"integration-secret-0123456789abcdef"


def open_access(store: Store) -> AccessStore:
    if store.backend == "sqlite":
        return SQLiteAccessStore(Path(store.location))
    return PostgresAccessStore(store.location)


@pytest.fixture
def access(store: Store) -> Iterator[AccessStore]:
    with open_access(store) as opened:
        yield opened


def database_text(store: Store) -> str:
    """Everything the key and audit tables hold, as text."""
    if store.backend == "sqlite":
        return b"".join(
            path.read_bytes() for path in Path(store.location).parent.glob("gallery.sqlite3*")
        ).decode("latin-1")
    with psycopg.connect(store.location) as conn:
        rows = conn.execute(
            "SELECT (SELECT json_agg(k)::text FROM api_keys k), "
            "(SELECT json_agg(a)::text FROM audit_log a)"
        ).fetchone()
    return " ".join(str(value) for value in rows)


def test_keys_are_created_listed_found_and_revoked(store: Store, access: AccessStore) -> None:
    gallery = store.open()  # the gallery and the key store share one database
    enroll(gallery, axis(0), identity_id="ann")
    authenticator = Authenticator(access, SECRET, required=True)
    reader, reader_text = authenticator.create_key("reader", ["read"])
    writer, writer_text = authenticator.create_key("writer", ["write", "read"])
    assert is_utc(reader.created_at)
    assert [(k.name, k.scopes) for k in access.list_keys()] == [
        ("reader", ("read",)),
        ("writer", ("read", "write")),
    ]
    found = access.find_key(writer.key_id)
    assert found is not None
    assert found.key == writer
    assert len(found.digest) == 64
    assert access.find_key("nothere") is None
    assert authenticator.authenticate(reader_text).name == "reader"
    with pytest.raises(KeyNameExistsError):
        authenticator.create_key("reader", ["admin"])
    assert access.count_active_keys() == 2

    revoked = authenticator.revoke_key(reader.key_id)
    assert revoked.revoked_at is not None
    assert access.revoke_key(reader.key_id) == revoked  # a second revocation changes nothing
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticator.authenticate(reader_text)
    with pytest.raises(KeyNotFoundError):
        access.revoke_key("nothere")
    assert [k.name for k in access.list_keys()] == ["writer"]
    assert len(access.list_keys(include_revoked=True)) == 2
    assert authenticator.create_key("reader", ["read"])[0].name == "reader"  # free again
    assert gallery.get_identity(identity_id="ann").identity_id == "ann"  # untouched

    text = database_text(store)
    for key_text in (reader_text, writer_text):
        assert key_text not in text
        assert key_text.split("_", 2)[2] not in text
    assert found.digest in text


def test_the_audit_log_is_paged_and_filtered(access: AccessStore) -> None:
    entries = [
        AuditEntry("identity.create", 201, "desk", "k1", "10.0.0.1", "POST", "/identities",
                   {"identity_id": "ann", "template_ids": ["t1", "t2"]}),
        AuditEntry("identity.delete", 404, "desk", "k1", "10.0.0.1", "DELETE",
                   "/identities/bob", {"identity_id": "bob"}),
        AuditEntry("identity.delete_all", 200, "ops", "k2", "10.0.0.2", "DELETE",
                   "/identities", {"deleted": 7}),
    ]  # fmt: skip
    for entry in entries:
        access.append_audit(entry)
    everything, total = access.audit_page(AuditFilter(), offset=0, limit=10)
    assert total == 3
    assert [e.action for e in everything] == [e.action for e in reversed(entries)]
    newest = everything[0]
    assert newest.targets == {"deleted": 7}
    assert (newest.principal, newest.key_id, newest.client, newest.status) == (
        "ops",
        "k2",
        "10.0.0.2",
        200,
    )
    assert is_utc(newest.at)
    assert everything[2].targets == {"identity_id": "ann", "template_ids": ["t1", "t2"]}

    def actions(**where: object) -> list[str]:
        return [e.action for e in access.audit_page(AuditFilter(**where), offset=0, limit=10)[0]]

    assert actions(principal="desk") == ["identity.delete", "identity.create"]
    assert actions(action="identity.delete") == ["identity.delete"]
    assert actions(target="t2") == ["identity.create"]
    assert actions(target="an") == []
    first = entries[0].at
    assert actions(since=entries[1].at) == ["identity.delete_all", "identity.delete"]
    assert actions(until=entries[1].at) == ["identity.create"]
    assert actions(since=first - timedelta(days=1), until=first + timedelta(days=1)) == [
        "identity.delete_all",
        "identity.delete",
        "identity.create",
    ]
    page, total = access.audit_page(AuditFilter(), offset=1, limit=1)
    assert ([e.action for e in page], total) == (["identity.delete"], 3)
    with pytest.raises(ValueError, match="holds a float"):
        access.append_audit(
            AuditEntry("x", 200, None, None, None, "POST", "/x", {"embedding": [0.1] * 512})
        )
    assert access.audit_page(AuditFilter(), offset=0, limit=10)[1] == 3


def test_keys_and_audit_survive_a_reopen(store: Store) -> None:
    with open_access(store) as access:
        key, text = Authenticator(access, SECRET, required=True).create_key("ops", ["admin"])
        access.append_audit(AuditEntry("key.create", 201, "ops", key.key_id, None, "POST", "/keys"))
    with open_access(store) as access:
        assert Authenticator(access, SECRET, required=True).authenticate(text).name == "ops"
        assert access.audit_page(AuditFilter(), offset=0, limit=10)[1] == 1


def test_a_closed_store_is_a_gallery_error(store: Store) -> None:
    access = open_access(store)
    access.close()
    with pytest.raises(GalleryError):
        access.list_keys()
