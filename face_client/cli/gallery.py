"""``face list``, ``face export`` and ``face import``: the gallery as a table or as JSON Lines.

The API returns no template embeddings, so an export holds each identity's id, name, metadata,
dates and templates (id, source file name, date), and with ``--faces`` each template's stored
face crop (112x112 JPEG) where the service keeps them. ``import`` re-creates identities from it:
name and metadata as exported, each template re-enrolled from the photo it came from
(``--photos DIR``: DIR/<identity_id>/<source>, the layout ``face enroll`` reads), else from its
exported face crop. Templates are new (new ids, embeddings computed again); matching by source
name makes a second import add nothing."""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path
from typing import Any

from face_client.aio import AsyncClient
from face_client.cli.common import Exit, UsageError, make_client, say
from face_client.cli.enroll import IDENTITY_ID, Outcome, Person, Photo, add_enroll_arguments
from face_client.cli.enroll import enroll_people as enroll_people
from face_client.cli.photos import open_output
from face_client.errors import NotFound
from face_client.models import Identity


async def list_identities(args: argparse.Namespace) -> Exit:
    async with make_client(args) as client:
        page = await client.list_identities(offset=args.offset, limit=args.limit, name=args.name)
    if args.json:
        for identity in page.items:
            say(json.dumps(identity.model_dump(mode="json")))
        return Exit.OK
    width = max([len("IDENTITY"), *(len(i.identity_id) for i in page.items)])
    say(f"{'IDENTITY':{width}}  {'TEMPLATES':>9}  NAME")
    for identity in page.items:
        say(f"{identity.identity_id:{width}}  {len(identity.templates):>9}  {identity.name or ''}")
    shown = f"{page.offset + 1}-{page.offset + len(page.items)}" if page.items else "none"
    say(f"{shown} of {page.total}")
    return Exit.OK


async def face_crops(client: AsyncClient, identity: Identity) -> dict[str, str | None]:
    """Template id -> its stored face crop as base64 JPEG (None where the service has none)."""
    crops: dict[str, str | None] = {}
    for template in identity.templates:
        try:
            jpeg = await client.template_image(identity.identity_id, template.template_id)
            crops[template.template_id] = base64.b64encode(jpeg).decode("ascii")
        except NotFound:
            crops[template.template_id] = None
    return crops


async def export(args: argparse.Namespace) -> Exit:
    out = open_output(args.out)
    count = missing = 0
    try:
        async with make_client(args) as client:
            async for identity in client.iter_identities(name=args.name):
                line = identity.model_dump(mode="json")
                if args.faces:
                    crops = await face_crops(client, identity)
                    missing += sum(crop is None for crop in crops.values())
                    for template in line["templates"]:
                        template["face_jpeg"] = crops[template["template_id"]]
                out.write(json.dumps(line) + "\n")
                count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    note = f" ({missing} templates without a stored face crop)" if missing else ""
    say(f"exported {count} identities{note}", error=args.out == "-")
    return Exit.OK


def read_export(path: Path, photos: Path | None, outcome: Outcome) -> list[Person]:
    """People from an export's lines. Each template is re-enrolled from its source photo,
    photos/<identity_id>/<source>, else from the face crop the export holds (--faces)."""
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    people = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry: dict[str, Any] = json.loads(line)
            identity_id = entry["identity_id"]
        except (ValueError, KeyError, TypeError) as error:
            raise UsageError(f"{path}:{number}: not an exported identity ({error})") from error
        if not isinstance(identity_id, str) or not IDENTITY_ID.match(identity_id):
            raise UsageError(f"{path}:{number}: invalid identity_id {identity_id!r}")
        person = Person(
            identity_id=identity_id,
            label=identity_id,
            name=entry.get("name"),
            metadata=entry.get("metadata") or {},
        )
        for number_in_line, template in enumerate(entry.get("templates", [])):
            # The name a template is matched on: its source, else one made from its id.
            name = Path(
                template.get("source") or f"{template.get('template_id', number_in_line)}.jpg"
            ).name
            file = photos / identity_id / name if photos else None
            if file is not None and file.is_file():
                person.images.append(Photo(name, path=file))
            elif template.get("face_jpeg"):
                person.images.append(Photo(name, data=base64.b64decode(template["face_jpeg"])))
            else:
                # Neither photo nor crop: it can only be found present in the gallery.
                person.images.append(Photo(name))
        people.append(person)
    return people


async def import_(args: argparse.Namespace) -> Exit:
    outcome = Outcome()
    photos = Path(args.photos) if args.photos else None
    if photos is not None and not photos.is_dir():
        raise UsageError(f"{photos} is not a folder")
    people = read_export(Path(args.file), photos, outcome)
    return await enroll_people(people, args, outcome)


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    command = commands.add_parser("list", parents=[common], help="list identities, a page")
    command.add_argument("--name", help="name contains (any case)")
    command.add_argument("--offset", type=int, default=0)
    command.add_argument("--limit", type=int, default=100)
    command.add_argument("--json", action="store_true", help="one JSON line per identity")
    command.set_defaults(run=list_identities)

    command = commands.add_parser(
        "export", parents=[common], help="every identity with its templates, as JSON Lines"
    )
    command.add_argument("out", metavar="OUT", help="output file, - for stdout")
    command.add_argument("--name", help="only identities whose name contains this")
    command.add_argument(
        "--faces",
        action="store_true",
        help="include each template's stored face crop (112x112 JPEG, base64): import can "
        "re-enroll from it when the original photo is not at hand",
    )
    command.set_defaults(run=export)

    command = commands.add_parser(
        "import", parents=[common], help="re-create identities from an export"
    )
    command.add_argument("file", metavar="FILE", help="a JSONL file written by `face export`")
    command.add_argument(
        "--photos",
        metavar="DIR",
        help="DIR/<identity_id>/<source>: the photos to re-enroll the templates from (else "
        "the export's face crops, if it has them)",
    )
    add_enroll_arguments(command)
    command.set_defaults(run=import_)
