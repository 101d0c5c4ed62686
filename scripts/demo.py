"""The demo: a real sync of a demo fleet with `airflow dags test`, metrics sent to a local moto server.

Run with ``make demo``. It never touches existing data: it creates (and re-creates) its own database
``device_sync_demo`` on the PostgreSQL server it finds, in this order:
  1. the server of ``DEVICE_SYNC_DATABASE_URL`` (a libpq URL of any database you may CREATE DATABASE from);
  2. 127.0.0.1:5432 as user postgres;
  3. a throwaway cluster it starts from the PostgreSQL binaries on the machine (stopped at the end).

It refuses to drop ``device_sync_demo`` while another session is connected to it (a psql, a running
``make airflow``, ...) and says so; ``--force-drop`` (or ``DEVICE_SYNC_FORCE_DROP=1``, ``make demo
FORCE_DROP=1``) drops it anyway, disconnecting those sessions.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import psycopg
from moto.server import ThreadedMotoServer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

from airflow_stack import (  # noqa: E402
    FORCE_DROP_ENV,
    DatabaseInUseError,
    airflow_uri,
    force_drop_requested,
    free_port,
    recreate_database,
)
from throwaway_postgres import throwaway_cluster  # noqa: E402

from device_sync import metrics  # noqa: E402
from device_sync.demo import load_demo_fleet  # noqa: E402

DEMO_DB = "device_sync_demo"
WORK = REPO / ".demo"
NAMESPACE = "IoT/DeviceParameterSync"


def say(text: str = "") -> None:
    print(text, flush=True)


def reachable(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
        return True
    except psycopg.Error:
        return False


@contextmanager
def server() -> Iterator[str]:
    url = os.environ.get("DEVICE_SYNC_DATABASE_URL")
    if url:
        say("PostgreSQL: DEVICE_SYNC_DATABASE_URL")
        yield url
    elif reachable(local := "postgresql://postgres@127.0.0.1:5432/postgres"):
        say("PostgreSQL: 127.0.0.1:5432")
        yield local
    else:
        say("PostgreSQL: none reachable; starting a throwaway local cluster")
        with throwaway_cluster() as url:
            yield url


def airflow_env(database_url: str, moto_endpoint: str) -> dict[str, str]:
    home = WORK / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
            "AIRFLOW_CONN_DEVICE_SYNC_POSTGRES": airflow_uri(database_url),
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "demo",
                    "password": "demo",
                    "extra": {"region_name": "us-east-1", "endpoint_url": moto_endpoint},
                }
            ),
        }
    )
    return env


def airflow(args: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        result = subprocess.run(
            [str(REPO / ".venv/bin/airflow"), *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tempfile.gettempdir(),
            check=False,
        )
    if result.returncode != 0:
        say(log.read_text()[-4000:])
        raise SystemExit(f"airflow {' '.join(args)} failed (exit {result.returncode}); full log: {log}")


def table_state(conn: psycopg.Connection) -> tuple[int, int]:
    rows, devices = conn.execute(
        "SELECT count(*), count(DISTINCT device_id) FROM iot_data.device_parameters"
    ).fetchone() or (0, 0)
    return int(rows), int(devices)


def sync_and_report(
    label: str,
    window_end: datetime,
    env: dict[str, str],
    conn: psycopg.Connection,
    cloudwatch: object,
    moto_endpoint: str,
) -> dict[str, float]:
    import urllib.request

    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST"))
    before = table_state(conn)
    started = datetime.now(UTC)
    say(f"\n== {label}: airflow dags test device_parameter_sync {window_end.isoformat()}")
    airflow(["dags", "test", "device_parameter_sync", window_end.isoformat()], env, WORK / f"{label}.log")
    after = table_state(conn)
    sums = metrics.read_back(
        cloudwatch,
        namespace=NAMESPACE,
        stage="dev",
        since=started - timedelta(minutes=5),
        until=datetime.now(UTC) + timedelta(minutes=5),
    )
    say(f"   table rows: {before[0]} -> {after[0]} (devices {before[1]} -> {after[1]})")
    say(
        f"   changes:    inserted {sums.get('RowsInserted', 0):g}, deleted {sums.get('RowsDeleted', 0):g}, "
        f"renamed {sums.get('RowsUpdated', 0):g}, skipped as bad input {sums.get('RowsSkipped', 0):g}"
    )
    say(f"   CloudWatch {NAMESPACE} (Stage=dev), read back from moto:")
    for name, value in sums.items():
        say(f"     {name:<20} {value:g}")
    return sums


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--force-drop",
        action="store_true",
        help=f"re-create the demo database even while other sessions are connected to it, disconnecting them "
        f"(also: {FORCE_DROP_ENV}=1); by default the demo refuses",
    )
    parser.add_argument("--database", default=DEMO_DB, help=f"the demo's database (default: {DEMO_DB})")
    args = parser.parse_args(argv)
    try:
        args.force_drop = args.force_drop or force_drop_requested()
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    demo_db: str = args.database
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    WORK.mkdir(exist_ok=True)
    window_end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with server() as admin_url:
        try:
            database_url = recreate_database(admin_url, demo_db, force=args.force_drop)
        except DatabaseInUseError as error:
            raise SystemExit(str(error)) from None
        moto_port = free_port()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port)
        moto.start()
        moto_endpoint = f"http://127.0.0.1:{moto_port}"
        try:
            with psycopg.connect(database_url, autocommit=True) as conn:
                started = time.monotonic()
                load_demo_fleet(conn, window_end)
                counts = conn.execute(
                    "SELECT (SELECT count(*) FROM iot_data.redshift_devices), "
                    "(SELECT count(*) FROM iot_data.timescale_parameters), "
                    "(SELECT count(*) FROM iot_data.measurements)"
                ).fetchone() or (0, 0, 0)
                say(
                    f"Demo fleet in database {demo_db}: {counts[0]} devices, {counts[1]} parameters, "
                    f"{counts[2]:,} measurements over the day before {window_end:%Y-%m-%d %H:%M} UTC "
                    f"({time.monotonic() - started:.1f} s)"
                )
                env = airflow_env(database_url, moto_endpoint)
                say("Preparing Airflow's metadata database (.demo/airflow) ...")
                airflow(["db", "migrate"], env, WORK / "db-migrate.log")
                cloudwatch = boto3.client(
                    "cloudwatch",
                    endpoint_url=moto_endpoint,
                    region_name="us-east-1",
                    aws_access_key_id="demo",
                    aws_secret_access_key="demo",
                )
                sync_and_report("first-run", window_end, env, conn, cloudwatch, moto_endpoint)
                second = sync_and_report("second-run", window_end, env, conn, cloudwatch, moto_endpoint)
                writes = sum(second.get(name, 0) for name in ("RowsInserted", "RowsDeleted", "RowsUpdated"))
                if writes:
                    raise SystemExit(f"The second run over the same window wrote {writes:g} rows; expected none.")
                say("\nThe second run over the same window changed nothing, as it should.")
                say(f"Logs: {WORK}/first-run.log, {WORK}/second-run.log")
        finally:
            moto.stop()


if __name__ == "__main__":
    main()
