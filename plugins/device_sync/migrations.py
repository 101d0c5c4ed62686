"""Versioned, idempotent migrations of the package's own tables, and the DAG's check that they are applied.

The package's tables (the target ``iot_data.device_parameters``, the staging schema with ``run_history`` and
``change_log``) change only through the numbered SQL files of ``include/sql/migrations/``,
``NNNN_<name>.sql``, numbered 1, 2, 3 … without gaps. :func:`migrate` applies the missing ones in order, each in
its own transaction under the writers' advisory lock (``lock_target.sql``, so never beside a running apply or
another migrate), and records it in ``<staging schema>.schema_version`` in that same transaction; a second
call applies nothing. Every file is idempotent (``IF NOT EXISTS``): ``0001_baseline`` is the schema that
device-sync created before migrations existed, so such a database is simply upgraded, its rows kept.

Migrations are DDL on tables an admin owns, so the admin runs them (``device-sync-migrate`` where the wheel is
installed, ``make migrate`` in a checkout, or the DAG ``device_sync_maintenance`` where there is no shell), not
the DAG: its first task only reads the catalog and ``schema_version`` (:func:`ensure_current`) and fails with a
message naming the command when the database is behind. A database without any of the package's tables is a
fresh install, which :func:`ensure_current` migrates itself (as device-sync always created its tables).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib.resources.abc import Traversable
from typing import Any, Literal

import psycopg
from psycopg import sql

from device_sync import db, resources
from device_sync.config import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

SQL = "migrations/"
LOCK = f"{db.STEPS_SQL}lock_target.sql"  # the writers' advisory lock, shared with apply_changes
# A migration file; any other .sql file in the folder that starts with a digit is refused (a typo would
# otherwise silently skip a migration). The runner's own files (state.sql, schema_version.sql) start with a letter.
_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")  # matched whole
DATABASE_URL_ENV = "DEVICE_SYNC_MIGRATE_DATABASE_URL"
# What applies the migrations where the package is installed (the wheel's console script; `make migrate` in a
# checkout), and where nobody has a shell (Amazon MWAA): the maintenance DAG.
COMMAND = "device-sync-migrate"
WITHOUT_A_SHELL = 'trigger the DAG device_sync_maintenance with conf {"conn_id": "<the owner\'s Airflow connection>"}'
GRANTS_FILE = "device_sync/include/sql/grants/device_sync_role.sql"

Status = Literal["empty", "behind", "current", "ahead"]


class SchemaError(RuntimeError):
    """The package's tables are not in a state the DAG can run on; a retry will not help."""


class SchemaBehind(SchemaError):
    """The database lacks migrations this package needs: the admin must apply them (:data:`COMMAND`)."""


class MigrationFileError(RuntimeError):
    """``include/sql/migrations`` is not a gapless sequence of ``NNNN_<name>.sql`` files (a packaging mistake)."""


@dataclass(frozen=True, order=True)
class Migration:
    """One file ``include/sql/migrations/NNNN_<name>.sql``."""

    version: int
    name: str
    file: str = field(compare=False)

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


def migrations_dir() -> Traversable:
    """The folder of the migration files (package data: see :mod:`device_sync.resources`)."""
    return resources.INCLUDE / "sql" / "migrations"


@cache
def available() -> tuple[Migration, ...]:
    """Every migration of this package, in order; :class:`MigrationFileError` unless numbered 1 … n."""
    found = []
    for entry in migrations_dir().iterdir():
        if not entry.name.endswith(".sql") or not entry.name[:1].isdigit():
            continue
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match is None:
            raise MigrationFileError(
                f"migration file {entry.name!r} must be named NNNN_<name>.sql (four digits, lower-case name)"
            )
        found.append(Migration(int(match[1]), match[2], entry.name))
    found.sort()
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationFileError(f"migration files must be numbered 1, 2, 3 … without gaps or duplicates: {versions}")
    return tuple(found)


def newest() -> int:
    """The schema version this package needs."""
    return available()[-1].version


def identifiers(settings: Settings) -> dict[str, sql.Composable]:
    """The ``{placeholders}`` of the migration files."""
    schema = settings.staging_schema
    return {
        "staging_schema": sql.Identifier(schema),
        "run_history": sql.Identifier(schema, "run_history"),
        "change_log": sql.Identifier(schema, "change_log"),
        "schema_version": sql.Identifier(schema, "schema_version"),
    }


@dataclass(frozen=True)
class SchemaState:
    """What :func:`schema_state` found.

    ``status``: ``empty`` (none of the package's history tables and no ``schema_version``: a fresh install),
    ``behind`` (migrations of this package are not recorded, or the tables predate versioned migrations:
    ``legacy``), ``current``, or ``ahead`` (the database has versions this package does not know: an older
    package after an upgrade; it runs, since migrations only add). ``absent``: the package's tables that do
    not exist (``iot_data.device_parameters``, ``run_history``, ``change_log``).
    """

    status: Status
    applied: tuple[int, ...]
    missing: tuple[Migration, ...]
    legacy: bool
    absent: tuple[str, ...]
    schema: str

    @property
    def version(self) -> int:
        """The database's schema version: the highest recorded one, 1 for tables made before migrations existed."""
        if self.applied:
            return max(self.applied)
        return 1 if self.legacy else 0

    @property
    def needed(self) -> int:
        return newest()

    def describe(self) -> str:
        if self.status == "empty":
            return (
                f"no device-sync tables yet (schema {self.schema}): a fresh install, created at version {self.needed}"
            )
        if self.status == "behind":
            have = (
                "1 (created before versioned migrations: no schema_version table)" if self.legacy else str(self.version)
            )
            missing = ", ".join(
                f"{migration.label} (records the existing tables)"
                if self.legacy and migration.version == 1
                else migration.label
                for migration in self.missing
            )
            return f"schema version {have}, this package needs {self.needed} (to apply: {missing})"
        if self.status == "ahead":
            return (
                f"schema version {self.version}, newer than this package's {self.needed} (migrations only add: it runs)"
            )
        return f"schema version {self.version}, current"


def _lock(cur: psycopg.Cursor[Any]) -> None:
    db.run(cur, db.load_sql(LOCK))


def _catalog(cur: psycopg.Cursor[Any], settings: Settings) -> dict[str, dict[str, Any]]:
    cur.execute(db.load_sql(f"{SQL}state.sql"), {"schema": settings.staging_schema})
    names = [column.name for column in cur.description or ()]
    return {row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()}


def _state(cur: psycopg.Cursor[Any], settings: Settings) -> SchemaState:
    catalog = _catalog(cur, settings)
    schema = settings.staging_schema
    absent = tuple(
        name
        for key, name in (
            ("target", "iot_data.device_parameters"),
            ("run_history", f"{schema}.run_history"),
            ("change_log", f"{schema}.change_log"),
        )
        if not catalog[key]["present"]
    )
    version_table = catalog["schema_version"]
    if not version_table["present"]:
        legacy = catalog["run_history"]["present"] or catalog["change_log"]["present"]
        return SchemaState(
            status="behind" if legacy else "empty",
            applied=(),
            missing=available(),
            legacy=legacy,
            absent=absent,
            schema=schema,
        )
    if not version_table["readable"]:
        raise SchemaError(
            f"this database role ({cur.connection.info.user}) may not read {schema}.schema_version, so device-sync "
            f"cannot check its schema version: as the admin, re-run {GRANTS_FILE} (it grants SELECT on it to the "
            f"role device_sync)"
        )
    cur.execute(
        sql.SQL("SELECT version FROM {} ORDER BY version").format(identifiers(settings)["schema_version"]),
    )
    applied = tuple(int(row[0]) for row in cur.fetchall())
    missing = tuple(migration for migration in available() if migration.version not in applied)
    status: Status = "behind" if missing else ("ahead" if applied and max(applied) > newest() else "current")
    return SchemaState(status=status, applied=applied, missing=missing, legacy=False, absent=absent, schema=schema)


def schema_state(conn: psycopg.Connection[Any], settings: Settings) -> SchemaState:
    """Read (never write) the package's schema version: the catalog and ``schema_version`` only, so the
    least-privileged role can run it (it needs SELECT on ``schema_version``)."""
    with db.transaction(conn, settings.statement_timeout_seconds) as cur:
        return _state(cur, settings)


def behind_message(state: SchemaState, database: str) -> str:
    return (
        f"The device-sync tables of database {database!r} are behind this package: {state.describe()}. "
        f"Nothing was changed. As the admin (the owner of iot_data and {state.schema}), run `{COMMAND}` where the "
        f"package is installed, with the DAG's DEVICE_SYNC_* environment (`--database-url "
        f"postgresql://admin@host:5432/db` for a URL instead of the Airflow connection), or, without a shell "
        f"(Amazon MWAA), {WITHOUT_A_SHELL}; then re-run the package's {GRANTS_FILE} if the DAG runs as the role "
        f"device_sync, and clear this task."
    )


def require_current(conn: psycopg.Connection[Any], settings: Settings) -> SchemaState:
    """The DAG's check at its first task (read-only): return the state when the schema is current, ahead or
    ``empty`` (a fresh install: the caller may :func:`migrate`); raise :class:`SchemaBehind` naming the command
    and the versions when migrations are missing, :class:`SchemaError` when a table of a migrated schema is gone."""
    state = schema_state(conn, settings)
    database = conn.info.dbname
    if state.status == "behind":
        raise SchemaBehind(behind_message(state, database))
    if state.status in ("current", "ahead") and state.absent:
        raise SchemaError(
            f"{', '.join(state.absent)} of database {database!r} do not exist although {state.schema}.schema_version "
            f"records version {state.version}: restore them from a backup, or, as the admin, drop "
            f"{state.schema}.schema_version and run `{COMMAND}`, which re-creates what is missing (every migration "
            f"is idempotent) and keeps what exists"
        )
    if state.status == "ahead":
        log.warning("device-sync database %r: %s", database, state.describe())
    return state


def ensure_current(conn: psycopg.Connection[Any], settings: Settings) -> list[int]:
    """The DAG's first step: a fresh database (none of the package's tables) is migrated here (a fresh install,
    as device-sync always did; :class:`SchemaBehind` naming the command if this role may not create them); a
    database that is behind raises :class:`SchemaBehind`; else nothing happens. Returns the versions applied
    (none unless the database was empty)."""
    state = require_current(conn, settings)
    if state.status != "empty":
        return []
    log.info("No device-sync tables in database %r yet: creating them (fresh install)", conn.info.dbname)
    try:
        return migrate(conn, settings)
    except psycopg.errors.InsufficientPrivilege as error:
        raise SchemaBehind(
            f"{behind_message(state, conn.info.dbname)} (This role may not create them itself: {error})"
        ) from error


def migrate(conn: psycopg.Connection[Any], settings: Settings) -> list[int]:
    """Apply the missing migrations in order, each in its own transaction under the writers' advisory lock,
    recorded in ``schema_version`` in that transaction; return the versions applied (empty when current).

    Concurrent calls (two admins, two fresh DAG runs) serialize on the lock; each migration is applied once.
    Runs DDL: the admin's connection (owner of iot_data and of the staging schema), not the DAG's role.
    """
    ids = identifiers(settings)
    timeout = settings.statement_timeout_seconds
    with db.transaction(conn, timeout) as cur:
        _lock(cur)
        catalog = _catalog(cur, settings)
        if not catalog["schema_version"]["present"]:
            if not catalog["schema_version"]["schema_present"]:
                db.run(cur, sql.SQL("CREATE SCHEMA {}").format(ids["staging_schema"]))
            db.run(cur, db.compose(f"{SQL}schema_version.sql", ids))
    applied: list[int] = []
    record = sql.SQL("INSERT INTO {} (version, name) VALUES (%(version)s, %(name)s)").format(ids["schema_version"])
    exists = sql.SQL("SELECT EXISTS (SELECT FROM {} WHERE version = %(version)s) AS done").format(ids["schema_version"])
    for migration in available():
        with db.transaction(conn, timeout) as cur:
            _lock(cur)
            if db.fetch_one_dict(cur, exists, {"version": migration.version})["done"]:
                continue
            db.run(cur, db.compose(f"{SQL}{migration.file}", ids))
            db.run(cur, record, {"version": migration.version, "name": migration.name})
        log.info("Applied migration %s", migration.label)
        applied.append(migration.version)
    return applied


def _connect(database_url: str | None, settings: Settings) -> psycopg.Connection[Any]:
    if database_url:
        return psycopg.connect(database_url, connect_timeout=10)
    from device_sync.compat import AirflowNotFoundException

    try:
        return db.connect(settings.postgres_conn_id, connect_timeout=10)
    except AirflowNotFoundException as error:
        raise SystemExit(
            f"migrate: the Airflow connection {settings.postgres_conn_id!r} (DEVICE_SYNC_POSTGRES_CONN_ID) does not "
            f"exist here: define it (AIRFLOW_CONN_{settings.postgres_conn_id.upper()}) or pass --database-url "
            f"(or set {DATABASE_URL_ENV}) ({error})"
        ) from error


def main(argv: Sequence[str] | None = None) -> int:
    """``device-sync-migrate`` (``make migrate`` / ``python scripts/migrate.py`` in a checkout)."""
    parser = argparse.ArgumentParser(
        prog="device-sync-migrate",
        description="Bring device-sync's own tables (iot_data.device_parameters, the staging schema's run_history "
        "and change_log) to this package's schema version; run as their owner (the admin). Reads the DAG's "
        "DEVICE_SYNC_* environment (DEVICE_SYNC_STAGING_SCHEMA, DEVICE_SYNC_POSTGRES_CONN_ID).",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(DATABASE_URL_ENV) or None,
        help=f"libpq URL of the IoT database (default: ${DATABASE_URL_ENV}, else the DAG's Airflow connection)",
    )
    parser.add_argument(
        "--check", action="store_true", help="only report the schema version; exit 1 when migrations are missing"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        settings = load_settings()
        available()
    except (ConfigError, MigrationFileError) as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 2
    try:
        conn = _connect(args.database_url, settings)
    except psycopg.OperationalError as error:
        print(f"migrate: cannot connect to the database: {error}", file=sys.stderr)
        return 2
    try:
        where = f"database {conn.info.dbname!r} on {conn.info.host}:{conn.info.port}"
        if args.check:
            state = schema_state(conn, settings)
            print(f"{where}: {state.describe()}")
            return 1 if state.status in ("empty", "behind") else 0
        before = schema_state(conn, settings)
        if before.status == "ahead":
            print(
                f"migrate: {where} is at schema version {before.version}, newer than this package's "
                f"{before.needed}: nothing was changed; run the migrations of the newer package",
                file=sys.stderr,
            )
            return 2
        applied = migrate(conn, settings)
        state = schema_state(conn, settings)
    except SchemaError as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 2
    except psycopg.errors.InsufficientPrivilege as error:
        print(
            f"migrate: {error}: run it as the admin, the owner of iot_data and {settings.staging_schema} (nothing of "
            f"the failed migration was kept; earlier ones stay applied)",
            file=sys.stderr,
        )
        return 2
    finally:
        conn.close()
    by_version = {migration.version: migration for migration in available()}
    for version in applied:
        print(f"{where}: applied {by_version[version].label}")
    if applied:
        print(f"{where}: now at version {state.version}")
        print(f"If the DAG runs as the role device_sync, re-run {GRANTS_FILE} now (as the admin).")
    else:
        print(f"{where}: already current at {state.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
