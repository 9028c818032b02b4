"""The SQL both backends run alike: an identity read with its templates, a page of identities,
an identity's name and metadata updated, templates' face crops stored and read, and the
detection records written, found, read and deleted. Written once over a DB-API connection
(sqlite3's or psycopg's: both ``execute`` a statement and give a cursor) in a :class:`Dialect`
that says how each database spells parameters, case-insensitive search, lists, JSON and
times. The backends keep what differs: connections, transactions and locks, templates and
search."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from face_service.errors import IdentityNotFoundError, TemplateNotFoundError
from face_service.gallery.rows import faces_from_json, faces_to_json
from face_service.gallery.types import Identity, Record, Template

IDENTITY_COLUMNS = "identity_id, name, metadata, created_at, updated_at"
RECORD_COLUMNS = "record_id, filename, width, height, channels, faces, created_at"


class Connection(Protocol):
    """What the statements need of a connection: sqlite3's and psycopg's both do."""

    def execute(self, query: Any, params: Any, /) -> Any: ...


@dataclass(frozen=True)
class Dialect:
    """One database's spelling of the shared statements."""

    mark: str  # a positional parameter
    contains: str  # a condition with {column}: the column holds the parameter, in any case
    in_list: str  # a condition with {column}: the column is one of the parameter's values
    encode_list: Callable[[list[str]], Any]  # the parameter of ``in_list``
    encode_json: Callable[[Any], Any]
    decode_json: Callable[[Any], Any]
    encode_time: Callable[[datetime], Any]
    decode_time: Callable[[Any], datetime]  # a timezone-aware UTC datetime

    # -- identities

    def templates_of(self, conn: Connection, identity_ids: list[str]) -> dict[str, list[Template]]:
        """Each identity's templates, in creation order."""
        found: dict[str, list[Template]] = {i: [] for i in identity_ids}
        for identity_id, template_id, source, created_at in conn.execute(
            "SELECT identity_id, template_id, source, created_at FROM templates "
            f"WHERE {self.in_list.format(column='identity_id')} ORDER BY seq",
            (self.encode_list(identity_ids),),
        ):
            found[identity_id].append(Template(template_id, source, self.decode_time(created_at)))
        return found

    def save_face_crops(self, conn: Connection, crops: list[tuple[str, bytes]]) -> None:
        """(template id, JPEG) pairs; a template deleted meanwhile is passed over."""
        for template_id, image in crops:
            conn.execute(
                "INSERT INTO template_faces (template_id, image) SELECT template_id, "
                f"{self.mark} FROM templates WHERE template_id = {self.mark}",
                (image, template_id),
            )

    def face_crop(self, conn: Connection, identity_id: str, template_id: str) -> bytes | None:
        row = conn.execute(
            "SELECT f.image FROM templates t LEFT JOIN template_faces f USING (template_id) "
            f"WHERE t.template_id = {self.mark} AND t.identity_id = {self.mark}",
            (template_id, identity_id),
        ).fetchone()
        if row is None:
            raise TemplateNotFoundError(identity_id, template_id)
        return None if row[0] is None else bytes(row[0])

    def get_identity(self, conn: Connection, identity_id: str) -> Identity:
        row = conn.execute(
            f"SELECT {IDENTITY_COLUMNS} FROM identities WHERE identity_id = {self.mark}",
            (identity_id,),
        ).fetchone()
        if row is None:
            raise IdentityNotFoundError(identity_id)
        return self._identity(row, self.templates_of(conn, [identity_id])[identity_id])

    def list_identities(
        self, conn: Connection, offset: int, limit: int, name_contains: str | None
    ) -> tuple[list[Identity], int]:
        rows, total = self._page(
            conn, "identities", IDENTITY_COLUMNS, "name", name_contains, offset, limit
        )
        templates = self.templates_of(conn, [row[0] for row in rows])
        return [self._identity(row, templates[row[0]]) for row in rows], total

    def update_identity(
        self, conn: Connection, identity_id: str, changes: dict[str, Any], now: datetime
    ) -> None:
        """Sets ``changes`` (name, metadata) and ``updated_at``; IdentityNotFoundError."""
        values = [self.encode_time(now)]
        values += [
            self.encode_json(value) if column == "metadata" else value
            for column, value in changes.items()
        ]
        assignments = ", ".join(f"{column} = {self.mark}" for column in ("updated_at", *changes))
        updated = conn.execute(
            f"UPDATE identities SET {assignments} WHERE identity_id = {self.mark}",
            [*values, identity_id],
        ).rowcount
        if not updated:
            raise IdentityNotFoundError(identity_id)

    def _identity(self, row: tuple[Any, ...], templates: list[Template]) -> Identity:
        identity_id, name, metadata, created_at, updated_at = row
        return Identity(
            identity_id,
            name,
            self.decode_json(metadata),
            self.decode_time(created_at),
            self.decode_time(updated_at),
            templates,
        )

    # -- detection records

    def insert_record(self, conn: Connection, record: Record) -> None:
        conn.execute(
            f"INSERT INTO records ({RECORD_COLUMNS}) VALUES ({', '.join([self.mark] * 7)})",
            (
                record.record_id,
                record.filename,
                record.width,
                record.height,
                record.channels,
                self.encode_json(faces_to_json(record.faces)),
                self.encode_time(record.created_at),
            ),
        )

    def find_records(
        self, conn: Connection, filename_contains: str | None, offset: int, limit: int
    ) -> tuple[list[Record], int]:
        rows, total = self._page(
            conn, "records", RECORD_COLUMNS, "filename", filename_contains, offset, limit
        )
        return [self._record(row) for row in rows], total

    def get_record(self, conn: Connection, record_id: str) -> Record | None:
        row = conn.execute(
            f"SELECT {RECORD_COLUMNS} FROM records WHERE record_id = {self.mark}", (record_id,)
        ).fetchone()
        return None if row is None else self._record(row)

    def delete_record(self, conn: Connection, record_id: str) -> bool:
        """Whether a record was deleted."""
        deleted = conn.execute(
            f"DELETE FROM records WHERE record_id = {self.mark}", (record_id,)
        ).rowcount
        return deleted > 0

    def _record(self, row: tuple[Any, ...]) -> Record:
        record_id, filename, width, height, channels, faces, created_at = row
        return Record(
            record_id,
            filename,
            width,
            height,
            channels,
            faces_from_json(self.decode_json(faces)),
            self.decode_time(created_at),
        )

    # -- pages

    def _page(
        self,
        conn: Connection,
        table: str,
        columns: str,
        text: str,
        contains: str | None,
        offset: int,
        limit: int,
    ) -> tuple[list[tuple[Any, ...]], int]:
        """Rows of ``table`` in creation order (then id, the first column) whose ``text``
        column holds ``contains`` (any case; None: every row), and how many there are."""
        where, args = "", []
        if contains is not None:
            where, args = f"WHERE {self.contains.format(column=text)}", [contains]
        first = columns.split(",")[0]
        (total,) = conn.execute(f"SELECT count(*) FROM {table} {where}", args).fetchone()
        rows = conn.execute(
            f"SELECT {columns} FROM {table} {where} ORDER BY created_at, {first} "
            f"LIMIT {self.mark} OFFSET {self.mark}",
            [*args, limit, offset],
        ).fetchall()
        return rows, total
