"""compute_delta and apply_changes against a real PostgreSQL: inserts, updates and deletes, the target table,
the writers' lock, and applying twice."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from device_sync import db, sync
from device_sync.config import load_settings
from device_sync.staging import drop_tables
from device_sync.window import Window
from source_data import add_devices, add_measurements, add_parameters, add_target, execute, query, target
from step_helpers import END, INJECTION, INSIDE, LOOKBACK, START, ensure_target, run_sync, staging_for, target_xmins

# --- apply -----------------------------------------------------------------------------------------------


def test_rows_outside_the_desired_set_are_deleted_including_inactive_and_unknown_devices(
    conn: psycopg.Connection[Any],
) -> None:
    add_devices(conn, ("d_active", "Active", True), ("d_inactive", "Inactive", False))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(
        conn,
        ("d_active", "p1", INSIDE),
        ("d_active", "p2", START - timedelta(minutes=1)),  # reported, but before the window
        ("d_inactive", "p1", INSIDE),
    )
    ensure_target(conn)
    add_target(
        conn,
        ("d_active", "Active", "p1", "Temp"),
        ("d_active", "Active", "p2", "Volt"),
        ("d_inactive", "Inactive", "p1", "Temp"),
        ("d_unknown", "Ghost", "p1", "Temp"),
    )

    summary = run_sync(conn)

    assert target(conn) == {("d_active", "p1"): ("Active", "Temp")}
    assert (summary["deletes"], summary["deleted"]) == (3, 3)
    assert (summary["inserted"], summary["updated"]) == (0, 0)


def test_missing_desired_rows_are_inserted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d2", "p2", INSIDE))
    ensure_target(conn)
    add_target(conn, ("d1", "Device 1", "p1", "Temp"))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d2", "p2"): ("Device 2", "Volt")}
    assert (summary["inserts"], summary["inserted"], summary["updated"], summary["deleted"]) == (1, 1, 0, 0)
    ((created, updated),) = query(
        conn, "SELECT created_at, updated_at FROM iot_data.device_parameters WHERE device_id = 'd2'"
    )
    assert created is not None
    assert created == updated


def test_changed_names_set_updated_at_to_now_and_keep_created_at(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Old device", True), ("d2", "Device 2", True), ("d3", "Device 3", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Old parameter"), ("p3", "Pressure"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d2", "p2", INSIDE), ("d3", "p3", INSIDE))
    run_sync(conn)
    long_ago = datetime(2000, 1, 1, tzinfo=UTC)
    execute(conn, "UPDATE iot_data.device_parameters SET created_at = %s, updated_at = %s", (long_ago, long_ago))
    execute(conn, "UPDATE iot_data.redshift_devices SET device_name = 'New device' WHERE device_id = 'd1'")
    execute(conn, "UPDATE iot_data.timescale_parameters SET parameter_name = 'New parameter' WHERE parameter_id = 'p2'")
    untouched_xmin = target_xmins(conn)[("d3", "p3")]

    ((before,),) = query(conn, "SELECT clock_timestamp()")
    summary = run_sync(conn)
    ((after,),) = query(conn, "SELECT clock_timestamp()")

    assert (summary["updates"], summary["updated"], summary["inserted"], summary["deleted"]) == (2, 2, 0, 0)
    rows = {
        (d, p): (dn, pn, c, u)
        for d, p, dn, pn, c, u in query(
            conn,
            "SELECT device_id, parameter_id, device_name, parameter_name, created_at, updated_at "
            "FROM iot_data.device_parameters",
        )
    }
    assert rows[("d1", "p1")][:2] == ("New device", "Temp")
    assert rows[("d2", "p2")][:2] == ("Device 2", "New parameter")
    for pair in (("d1", "p1"), ("d2", "p2")):
        created_at, updated_at = rows[pair][2:]
        assert created_at == long_ago
        assert before <= updated_at <= after
    assert rows[("d3", "p3")] == ("Device 3", "Pressure", long_ago, long_ago)
    assert target_xmins(conn)[("d3", "p3")] == untouched_xmin


def test_second_run_over_the_same_window_writes_no_row(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "   ", True), ("d3", "Device 3", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"), ("p_blank", ""))
    add_measurements(
        conn,
        ("d1", "p1", INSIDE),
        ("d1", "p2", INSIDE),
        ("d2", "p1", INSIDE),  # skipped: blank device name
        ("d3", "p_blank", INSIDE),  # skipped: blank parameter name
        ("d3", "p_unknown", INSIDE),  # skipped: unknown parameter
    )
    ensure_target(conn)
    add_target(conn, ("d2", "kept", "p1", "kept"), ("d1", "stale", "p2", "stale"), ("gone", "x", "p1", "x"))
    first = run_sync(conn)
    assert (first["inserted"], first["updated"], first["deleted"]) == (1, 1, 1)
    xmins = target_xmins(conn)
    assert len(xmins) == 3

    second = run_sync(conn)

    assert target_xmins(conn) == xmins
    assert (second["inserts"], second["updates"], second["deletes"]) == (0, 0, 0)
    assert (second["inserted"], second["updated"], second["deleted"]) == (0, 0, 0)


def test_sql_injection_looking_names_and_ids_are_stored_verbatim(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", INJECTION, True), (INJECTION, "Device 2", True))
    add_parameters(conn, ("p1", INJECTION), (INJECTION, "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE), (INJECTION, INJECTION, INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): (INJECTION, INJECTION), (INJECTION, INJECTION): ("Device 2", "Temp")}
    assert summary["inserted"] == 2
    assert query(conn, "SELECT count(*) FROM iot_data.measurements")[0][0] == 2


# --- target creation -------------------------------------------------------------------------------------


def test_missing_target_is_created_with_the_seed_ddl(conn: psycopg.Connection[Any]) -> None:
    assert query(conn, "SELECT to_regclass('iot_data.device_parameters')") == [(None,)]

    run_sync(conn)

    columns = query(
        conn,
        "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns "
        "WHERE table_schema = 'iot_data' AND table_name = 'device_parameters' ORDER BY ordinal_position",
    )
    assert columns == [
        ("device_id", "text", "NO", None),
        ("device_name", "text", "NO", None),
        ("parameter_id", "text", "NO", None),
        ("parameter_name", "text", "NO", None),
        ("created_at", "timestamp with time zone", "YES", "now()"),
        ("updated_at", "timestamp with time zone", "YES", "now()"),
    ]
    primary_key = query(
        conn,
        "SELECT a.attname FROM pg_index i "
        "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE i.indrelid = 'iot_data.device_parameters'::regclass AND i.indisprimary ORDER BY k.position",
    )
    assert [name for (name,) in primary_key] == ["device_id", "parameter_id"]
    indexes = dict(
        query(
            conn,
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = 'iot_data' AND tablename = 'device_parameters'",
        )
    )
    assert set(indexes) == {
        "device_parameters_pkey",
        "idx_device_parameters_device_id",
        "idx_device_parameters_parameter_id",
    }
    assert indexes["idx_device_parameters_device_id"].endswith("USING btree (device_id)")
    assert indexes["idx_device_parameters_parameter_id"].endswith("USING btree (parameter_id)")


def test_existing_target_with_rows_is_used_as_is(conn: psycopg.Connection[Any]) -> None:
    execute(
        conn,
        """
        CREATE TABLE iot_data.device_parameters (
            device_id TEXT NOT NULL,
            device_name TEXT NOT NULL,
            parameter_id TEXT NOT NULL,
            parameter_name TEXT NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
            PRIMARY KEY (device_id, parameter_id)
        );
        CREATE INDEX idx_device_parameters_device_id ON iot_data.device_parameters(device_id);
        CREATE INDEX idx_device_parameters_parameter_id ON iot_data.device_parameters(parameter_id);
        INSERT INTO iot_data.device_parameters VALUES
            ('d1', 'Device 1', 'p1', 'Temp', '2001-01-01Z', '2002-02-02Z'),
            ('d1', 'Device 1', 'p_old', 'Old', '2001-01-01Z', '2002-02-02Z');
        """,
    )
    ((oid,),) = query(conn, "SELECT 'iot_data.device_parameters'::regclass::oid")
    xmin_kept = target_xmins(conn)[("d1", "p1")]
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))

    summary = run_sync(conn)

    assert query(conn, "SELECT 'iot_data.device_parameters'::regclass::oid") == [(oid,)]
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    assert target_xmins(conn)[("d1", "p1")] == xmin_kept
    assert query(conn, "SELECT created_at, updated_at FROM iot_data.device_parameters WHERE parameter_id = 'p1'") == [
        (datetime(2001, 1, 1, tzinfo=UTC), datetime(2002, 2, 2, tzinfo=UTC))
    ]
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (1, 0, 1)
    assert len(query(conn, "SELECT 1 FROM pg_indexes WHERE tablename = 'device_parameters'")) == 3


# --- concurrency -----------------------------------------------------------------------------------------


def test_apply_changes_waits_for_the_writers_lock_then_applies_what_is_still_needed(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    settings = load_settings()
    staging = staging_for(settings)
    window = Window.ending_at(END, LOOKBACK)
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, window)
    sync.resolve_parameter_names(conn, settings, staging)
    planned = sync.compute_delta(conn, settings, staging)
    assert planned == {"inserts": 2, "updates": 0, "deletes": 0}

    outcome: dict[str, Any] = {}

    def apply() -> None:
        try:
            outcome["result"] = sync.apply_changes(conn, settings, staging)
        except BaseException as error:  # reported to the main thread
            outcome["error"] = error

    worker = threading.Thread(target=apply, daemon=True)
    with psycopg.connect(database_url) as other:
        try:
            with other.transaction():
                other.execute(db.load_sql(f"{db.STEPS_SQL}lock_target.sql"))
                # Another writer changes the table while it holds the lock.
                other.execute(
                    "INSERT INTO iot_data.device_parameters (device_id, device_name, parameter_id, parameter_name) "
                    "VALUES ('d1', 'stale', 'p1', 'stale'), ('zz', 'Ghost', 'p1', 'Temp')"
                )
                worker.start()
                # Poll (bounded) until the apply waits: on a loaded machine the thread may need a while.
                deadline = time.monotonic() + 20
                waiting_on: list[Any] = []
                while time.monotonic() < deadline and waiting_on != [("Lock", "advisory")]:
                    time.sleep(0.2)
                    waiting_on = other.execute(
                        "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s",
                        (conn.info.backend_pid,),
                    ).fetchall()
                time.sleep(1.0)
                waited = worker.is_alive()
            # The lock holder has committed: the waiting apply_changes goes on.
        finally:
            if worker.ident is not None:
                worker.join(timeout=30)

    assert waited, f"apply_changes did not wait for the lock: {outcome}"
    assert waiting_on == [("Lock", "advisory")]
    assert not worker.is_alive(), "apply_changes did not finish after the lock was released"
    assert "error" not in outcome, outcome.get("error")
    # The delta was recomputed after the lock: the other writer's rows are updated and deleted.
    assert outcome["result"] == {"inserted": 1, "updated": 1, "deleted": 1, "applied": True, "guard": None}
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    drop_tables(conn, settings, staging)


# --- retries ---------------------------------------------------------------------------------------------


def test_apply_changes_twice_applies_nothing_the_second_time(conn: psycopg.Connection[Any]) -> None:
    settings = load_settings()
    staging = staging_for(settings)
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p2", "Volt"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))
    ensure_target(conn)
    add_target(conn, ("d1", "old", "p1", "Temp"), ("d9", "Gone", "p1", "Temp"))
    sync.discover_active_devices(conn, settings, staging)
    sync.aggregate_recent_measurements(conn, settings, staging, Window.ending_at(END, LOOKBACK))
    sync.resolve_parameter_names(conn, settings, staging)
    sync.compute_delta(conn, settings, staging)

    first = sync.apply_changes(conn, settings, staging)
    xmins = target_xmins(conn)
    second = sync.apply_changes(conn, settings, staging)

    assert first == {"inserted": 1, "updated": 1, "deleted": 1, "applied": True, "guard": None}
    assert second == {"inserted": 0, "updated": 0, "deleted": 0, "applied": True, "guard": None}
    assert target_xmins(conn) == xmins
    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp"), ("d1", "p2"): ("Device 1", "Volt")}
    drop_tables(conn, settings, staging)
