"""API keys below HTTP: key texts and their digests, the server secret file, the authenticator
(verification, revocation, the operator's admin key) on the SQLite key store, whether keys are
required for a given host, and the ``face-service-keys`` command line."""

from __future__ import annotations

import hmac
import json
import os
import sqlite3
import tomllib
from pathlib import Path

import pytest

from face_service.auth import (
    Authenticator,
    auth_required,
    is_loopback,
    keys,
    log_auth_state,
    server_secret,
)
from face_service.auth import cli as keys_cli
from face_service.errors import AuthenticationError, KeyNameExistsError, KeyNotFoundError
from face_service.gallery import AuditEntry, AuditFilter, open_access_store
from face_service.gallery.access import check_targets
from face_service.settings import REPOSITORY_ROOT, Settings

SECRET = b"0123456789abcdef0123456789abcdef"


@pytest.fixture
def authenticator(tmp_path: Path):
    with open_access_store(Settings(data_dir=tmp_path)) as store:
        yield Authenticator(store, SECRET, required=True)


def database_bytes(folder: Path) -> bytes:
    """Every byte of the SQLite gallery's files (the WAL too)."""
    return b"".join(path.read_bytes() for path in folder.glob("gallery.sqlite3*"))


def test_new_keys_are_random_and_parse_to_their_id() -> None:
    key_id, text = keys.new_key()
    other_id, other = keys.new_key()
    assert text.startswith(f"fsk_{key_id}_")
    assert len(text) >= 4 + 12 + 1 + 43
    assert (key_id, text) != (other_id, other)
    assert keys.lookup_id(text, SECRET) == key_id
    # A key made up by an operator is found by an id derived with the secret.
    made_up = "x" * 40
    assert keys.lookup_id(made_up, SECRET) == keys.lookup_id(made_up, SECRET)
    assert keys.lookup_id(made_up, SECRET) != keys.lookup_id(made_up, b"another secret value!")


def test_digests_are_hmac_sha256_under_the_secret_and_compared_in_constant_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, text = keys.new_key()
    stored = keys.digest(text, SECRET)
    assert len(stored) == 64
    assert text not in stored
    assert stored == hmac.new(SECRET, b"key\0" + text.encode(), "sha256").hexdigest()
    assert keys.digest(text, b"another secret value!") != stored
    compared: list[tuple[str, str]] = []
    real = hmac.compare_digest
    monkeypatch.setattr(
        keys.hmac, "compare_digest", lambda a, b: compared.append((a, b)) or real(a, b)
    )
    assert keys.matches(text, stored, SECRET)
    assert not keys.matches(text + "x", stored, SECRET)
    assert len(compared) == 2


def test_scopes_imply_the_lower_ones_and_unknown_ones_are_refused() -> None:
    assert keys.effective_scopes(["admin"]) == {"read", "write", "admin", "metrics"}
    assert keys.effective_scopes(["write"]) == {"read", "write"}
    assert keys.effective_scopes(["read"]) == {"read"}
    # metrics (GET /metrics) stands alone: it reads no biometric data, nothing implies it but admin
    assert keys.effective_scopes(["metrics"]) == {"metrics"}
    assert keys.normal_scopes(["admin", "read", "read"]) == ("read", "admin")
    assert keys.normal_scopes(["metrics", "read"]) == ("read", "metrics")
    with pytest.raises(ValueError, match="unknown scope 'root'"):
        keys.normal_scopes(["root"])
    with pytest.raises(ValueError, match="at least one scope"):
        keys.normal_scopes([])


def test_the_secret_file_is_made_0600_once_and_refused_when_others_can_read_it(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path)
    first = server_secret(settings)
    path = tmp_path / "auth_secret"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert len(first) == 64
    assert server_secret(settings) == first  # kept, not remade
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        server_secret(settings)
    from_env = Settings(data_dir=tmp_path, auth_secret="s" * 32)
    assert server_secret(from_env) == b"s" * 32
    with pytest.raises(ValueError, match="at least 16"):
        server_secret(Settings(data_dir=tmp_path, auth_secret="short"))


@pytest.mark.parametrize(
    ("host", "auth", "required"),
    [
        ("127.0.0.1", "auto", False),
        ("localhost", "auto", False),
        ("::1", "auto", False),
        ("127.0.0.2", "auto", False),
        ("0.0.0.0", "auto", True),
        ("::", "auto", True),
        ("192.168.1.20", "auto", True),
        ("face.example.org", "auto", True),
        ("127.0.0.1", "required", True),
        ("0.0.0.0", "disabled", False),
    ],
)
def test_keys_are_required_beyond_loopback_unless_told(
    host: str, auth: str, required: bool
) -> None:
    assert auth_required(Settings(host=host, auth=auth)) is required


def test_the_defaults_listen_on_loopback_with_auth_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FACE_HOST", "FACE_AUTH", "FACE_ADMIN_KEY", "FACE_AUTH_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert (settings.host, settings.auth) == ("127.0.0.1", "auto")
    assert settings.admin_key is None
    assert settings.auth_secret is None
    assert is_loopback(settings.host)
    monkeypatch.setenv("FACE_HOST", "0.0.0.0")
    assert auth_required(Settings(_env_file=None))
    # The secrets never show in the settings' text.
    monkeypatch.setenv("FACE_ADMIN_KEY", "A" * 40)
    assert "A" * 40 not in repr(Settings(_env_file=None))


def test_keys_verify_are_revoked_and_never_stored_in_clear(
    authenticator: Authenticator, tmp_path: Path
) -> None:
    key, text = authenticator.create_key("reception", ["write"])
    principal = authenticator.authenticate(text)
    assert (principal.name, principal.key_id) == ("reception", key.key_id)
    assert principal.scopes == {"read", "write"}
    assert [k.name for k in authenticator.store.list_keys()] == ["reception"]
    secret_part = text.split("_", 2)[2]  # the secret may hold "_" itself
    stored = database_bytes(tmp_path)
    assert text.encode() not in stored
    assert secret_part.encode() not in stored
    assert keys.digest(text, SECRET).encode() in stored  # what it holds instead

    # The last character changed (to one it is not: a fixed "A" equals it one time in 64).
    altered = text[:-1] + ("B" if text.endswith("A") else "A")
    for wrong in (None, "", text + "x", altered, "fsk_000000000000_" + "a" * 43, "x" * 600):
        with pytest.raises(AuthenticationError) as refused:
            authenticator.authenticate(wrong)
        assert refused.value.status_code == 401
        assert "WWW-Authenticate" in refused.value.headers
        assert text not in str(refused.value)
    with pytest.raises(KeyNameExistsError):
        authenticator.create_key("reception", ["read"])

    authenticator.revoke_key(key.key_id)
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticator.authenticate(text)
    assert authenticator.store.list_keys() == []
    assert [k.revoked_at is not None for k in authenticator.store.list_keys(include_revoked=True)]
    authenticator.create_key("reception", ["read"])  # the name is free again
    with pytest.raises(KeyNotFoundError):
        authenticator.revoke_key("nothere")


def test_a_key_under_another_secret_does_not_verify(authenticator: Authenticator) -> None:
    _, text = authenticator.create_key("ops", ["admin"])
    other = Authenticator(authenticator.store, b"another secret value, 32 bytes!!", required=True)
    with pytest.raises(AuthenticationError):
        other.authenticate(text)


def test_a_revocation_elsewhere_takes_effect_after_the_cache_time(tmp_path: Path) -> None:
    with open_access_store(Settings(data_dir=tmp_path)) as store:
        service = Authenticator(store, SECRET, required=True, cache_ttl_s=0.0)
        command_line = Authenticator(store, SECRET, required=True)
        key, text = command_line.create_key("ops", ["read"])
        assert service.authenticate(text).name == "ops"
        command_line.revoke_key(key.key_id)
        with pytest.raises(AuthenticationError):
            service.authenticate(text)


def test_the_operator_admin_key_is_stored_once_rotated_and_stays_revoked(
    authenticator: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    first = "operator-admin-key-" + "1" * 24
    stored = authenticator.bootstrap_admin(first)
    assert stored is not None
    assert stored.scopes == ("admin",)
    assert authenticator.bootstrap_admin(first) is None  # already there
    assert authenticator.authenticate(first).allows("admin")
    second = "operator-admin-key-" + "2" * 24
    authenticator.bootstrap_admin(second)  # the variable changed: the old one is revoked
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(first)
    assert authenticator.authenticate(second).name == "env-admin"
    authenticator.revoke_key(keys.lookup_id(second, SECRET))
    assert authenticator.bootstrap_admin(second) is None
    with pytest.raises(AuthenticationError):
        authenticator.authenticate(second)
    assert "stays revoked" in caplog.text
    with pytest.raises(ValueError, match="at least 32"):
        authenticator.bootstrap_admin("short")
    assert first not in caplog.text
    assert second not in caplog.text


def test_audit_entries_hold_ids_and_counts_only(tmp_path: Path) -> None:
    check_targets({"identity_id": "ann", "template_ids": ["t1", "t2"], "deleted": 3})
    for bad in ({"embedding": [0.1, 0.2]}, {"x": 0.5}, {"image": "A" * 5000}, {"x": {"a": 1}}):
        with pytest.raises(ValueError, match="audit target"):
            check_targets(bad)
    with open_access_store(Settings(data_dir=tmp_path)) as store:
        entry = AuditEntry("identity.delete", 204, "ops", "k1", "10.0.0.1", "DELETE", "/x", {})
        store.append_audit(entry)
        with pytest.raises(ValueError, match="audit target 'e' holds a float"):
            store.append_audit(
                AuditEntry("x", 200, None, None, None, "POST", "/x", {"e": [0.5] * 512})
            )
        items, total = store.audit_page(AuditFilter(), offset=0, limit=10)
        assert total == 1
        assert items[0].action == "identity.delete"


def test_the_command_line_creates_lists_and_revokes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("FACE_GALLERY_DATABASE_URL", raising=False)
    monkeypatch.delenv("FACE_AUTH_SECRET", raising=False)
    assert keys_cli.main(["create", "--name", "ops", "--scopes", "admin"]) == 0
    out, err = capsys.readouterr()
    text = out.strip()
    assert keys.KEY_PATTERN.match(text)
    assert "shown only now" in err
    assert str(tmp_path / "gallery.sqlite3") in err
    assert text not in err
    assert keys_cli.main(["list", "--json"]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["name"] == "ops"
    assert listed["scopes"] == ["admin"]
    assert text not in json.dumps(listed)
    assert keys_cli.main(["create", "--name", "ops", "--scopes", "read"]) == 1
    assert "already" in capsys.readouterr().err
    assert keys_cli.main(["create", "--name", "x", "--scopes", "root"]) == 2
    assert keys_cli.main(["revoke", listed["key_id"]]) == 0
    assert keys_cli.main(["revoke", "nothere"]) == 1
    capsys.readouterr()
    assert keys_cli.main(["list"]) == 0
    assert capsys.readouterr().out == ""
    with sqlite3.connect(tmp_path / "gallery.sqlite3") as conn:
        actions = [row[0] for row in conn.execute("SELECT action FROM audit_log ORDER BY seq")]
    assert actions == ["key.create", "key.revoke"]
    # The key made by the command line verifies in the service (same data dir, same secret).
    with open_access_store(Settings(data_dir=tmp_path)) as store:
        service = Authenticator(store, server_secret(Settings(data_dir=tmp_path)), required=True)
        with pytest.raises(AuthenticationError, match="revoked"):
            service.authenticate(text)


def test_the_command_line_is_a_declared_console_script() -> None:
    project = tomllib.loads((REPOSITORY_ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["face-service-keys"] == "face_service.auth.cli:main"


def test_a_shared_postgres_gallery_without_a_secret_is_warned_about(
    authenticator: Authenticator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        gallery_database_url="postgresql://db.example/gallery", host="0.0.0.0", auth="auto"
    )
    log_auth_state(settings, authenticator)
    assert "every API process on this PostgreSQL gallery needs the same secret" in caplog.text
    caplog.clear()
    log_auth_state(settings.model_copy(update={"auth_secret": "s" * 32}), authenticator)
    assert "same secret" not in caplog.text
