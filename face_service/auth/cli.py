"""``face-service-keys``: create, list and revoke API keys against the gallery's database directly
(the same FACE_DATA_DIR or FACE_GALLERY_DATABASE_URL, and FACE_AUTH_SECRET, as the service), for
the first admin key and for recovery. A new key is printed once, on stdout; every change is
written to the audit log."""

from __future__ import annotations

import argparse
import getpass
import json
import re
import sys
from collections.abc import Sequence

from face_service.auth.authenticator import Authenticator
from face_service.auth.keys import NAME_PATTERN, SCOPES, server_secret
from face_service.errors import FaceServiceError
from face_service.gallery import AccessStore, ApiKey, AuditEntry, open_access_store
from face_service.gallery.factory import sqlite_path
from face_service.settings import Settings


def say(text: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(text + "\n")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="face-service-keys",
        description="API keys of the face service, in its gallery database (FACE_DATA_DIR or "
        "FACE_GALLERY_DATABASE_URL; FACE_AUTH_SECRET as the service has it).",
    )
    commands = main.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it (once)")
    create.add_argument("--name", required=True, help="who uses it: logs and the audit show it")
    create.add_argument(
        "--scopes",
        required=True,
        help=f"comma-separated, of {', '.join(SCOPES)} (admin implies write implies read, "
        "and metrics)",
    )
    listing = commands.add_parser("list", help="the keys (never their secrets)")
    listing.add_argument("--all", action="store_true", help="revoked ones too")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    revoke = commands.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    return main


def key_json(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "name": key.name,
        "scopes": list(key.scopes),
        "created_at": key.created_at.isoformat(),
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def audit(store: AccessStore, action: str, command: str, key: ApiKey) -> None:
    store.append_audit(
        AuditEntry(
            action=action,
            status=0,  # not an HTTP request: 0 means done
            principal=f"cli:{getpass.getuser()}",
            key_id=None,
            client="local",
            method="CLI",
            path=f"face-service-keys {command}",
            targets={"key_id": key.key_id, "name": key.name},
        )
    )


def database(settings: Settings) -> str:
    """Where the keys are, for the operator to check it is the service's (no password shown)."""
    if settings.gallery_database_url:
        return "the PostgreSQL gallery of FACE_GALLERY_DATABASE_URL"
    return str(sqlite_path(settings))


def run(arguments: argparse.Namespace, settings: Settings) -> int:
    with open_access_store(settings) as store:
        authenticator = Authenticator(store, server_secret(settings), required=True)
        if arguments.command == "create":
            if not re.match(NAME_PATTERN, arguments.name):
                say(f"invalid name: it must match {NAME_PATTERN}", error=True)
                return 2
            scopes = [s.strip() for s in arguments.scopes.split(",") if s.strip()]
            try:
                key, text = authenticator.create_key(arguments.name, scopes)
            except ValueError as error:
                say(str(error), error=True)
                return 2
            audit(store, "key.create", "create", key)
            say(text)
            say(
                f"key {key.key_id} {key.name!r} ({','.join(key.scopes)}) stored in "
                f"{database(settings)}: shown only now; send it as 'X-API-Key: <key>'",
                error=True,
            )
        elif arguments.command == "list":
            for key in store.list_keys(include_revoked=arguments.all):
                if arguments.json:
                    say(json.dumps(key_json(key)))
                else:
                    revoked = f" revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else ""
                    say(f"{key.key_id}  {key.name}  {','.join(key.scopes)}{revoked}")
        else:
            key = authenticator.revoke_key(arguments.key_id)
            audit(store, "key.revoke", "revoke", key)
            say(f"revoked {key.key_id} {key.name!r}", error=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        return run(arguments, Settings())
    except (FaceServiceError, PermissionError, ValueError) as error:
        say(f"face-service-keys: {error}", error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
