"""resolve_parameter_names against a real PostgreSQL: naming every observed pair, and the pairs and parameter
rows it skips and counts."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from source_data import add_devices, add_measurements, add_parameters, add_target, target
from step_helpers import INSIDE, ensure_target, run_sync, target_xmins

# --- bad parameter rows and unnamed pairs ----------------------------------------------------------------


def test_null_and_blank_parameter_names_are_skipped_and_counted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, ("p_null", None), ("p_empty", ""), ("p_spaces", "   "), ("p_ok", "Fine"))
    add_measurements(
        conn, ("d1", "p_null", INSIDE), ("d1", "p_empty", INSIDE), ("d1", "p_spaces", INSIDE), ("d1", "p_ok", INSIDE)
    )

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p_ok"): ("Device 1", "Fine")}
    assert summary["parameter_name_missing"] == 3
    assert summary["desired_pairs"] == 1
    assert summary["skipped"] == 3


def test_parameters_unknown_to_timescale_parameters_are_skipped_and_counted(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d1", "Device 1", True), ("d2", "Device 2", True))
    add_parameters(conn, ("p1", "Temp"))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p_unknown", INSIDE), ("d2", "P1", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "Temp")}
    assert summary["parameter_unknown"] == 2
    assert summary["skipped"] == 2


@pytest.mark.parametrize("reverse", [False, True], ids=["given-order", "reversed-order"])
def test_duplicate_parameter_rows_resolve_to_one_deterministic_name(
    conn: psycopg.Connection[Any], reverse: bool
) -> None:
    rows = [
        ("p1", "zz"),
        ("p1", "mm"),
        ("p1", ""),
        ("p1", None),
        ("p1", "   "),
        ("p2", None),
        ("p2", ""),  # all of p2's names are blank: the pair is skipped
    ]
    add_devices(conn, ("d1", "Device 1", True))
    add_parameters(conn, *(reversed(rows) if reverse else rows))
    add_measurements(conn, ("d1", "p1", INSIDE), ("d1", "p2", INSIDE))

    summary = run_sync(conn)

    assert target(conn) == {("d1", "p1"): ("Device 1", "mm")}
    assert summary["parameter_duplicate_rows"] == 4 + 1
    assert summary["parameter_name_missing"] == 1
    assert summary["skipped"] == 5 + 1


def test_skipped_pairs_already_in_the_target_are_kept_untouched(conn: psycopg.Connection[Any]) -> None:
    add_devices(conn, ("d_blank", " ", True), ("d1", "Device 1", True))
    add_parameters(conn, ("p1", "Temp"), ("p_blank", None))
    add_measurements(
        conn,
        ("d_blank", "p1", INSIDE),  # device name missing
        ("d1", "p_unknown", INSIDE),  # parameter unknown
        ("d1", "p_blank", INSIDE),  # parameter name missing
    )
    ensure_target(conn)
    old = {
        ("d_blank", "p1"): ("old device", "old temp"),
        ("d1", "p_unknown"): ("old d1", "old unknown"),
        ("d1", "p_blank"): ("old d1", "old blank"),
    }
    add_target(conn, *((d, dn, p, pn) for (d, p), (dn, pn) in old.items()))
    xmins = target_xmins(conn)

    summary = run_sync(conn)

    assert target(conn) == old
    assert target_xmins(conn) == xmins
    assert (summary["device_name_missing_pairs"], summary["parameter_unknown"], summary["parameter_name_missing"]) == (
        1,
        1,
        1,
    )
    assert (summary["inserted"], summary["updated"], summary["deleted"]) == (0, 0, 0)
