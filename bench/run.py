"""device-sync benchmark (``make bench``, not part of the test suite).

    .venv/bin/python bench/run.py [--scale 1.0] [--warm 3] [--reuse] [--cold | --no-cold] [--skip-sparse]
                                  [--output-dir bench/results]

1. Generates a fleet inside PostgreSQL (database device_sync_bench, bench/sql/generate_fleet.sql):
   1,000 devices x scale, 200 parameters, 20 per device, one measurement a minute for 24 h, with drift.
2. Times, for the time index only and then with the recommended index (device_id, parameter_id, time),
   for the 1 h and 24 h windows (and 6 h with the recommended index, warm only): ours (the package's
   steps, N=1 and N=2 aggregation shards), the seed-like row-by-row service, the usual staging pattern and
   the floor query. Each: median of the warm runs plus one cold run (PostgreSQL restarted, page cache
   dropped), every run from the same drifted target.
3. A no-change rerun of ours and of the staging pattern: rows written and WAL.
4. Sparse fleets of 1, 3 and 10 times the devices (database device_sync_bench_sparse): ours' time against the
   number of pairs and the peak RSS of a fresh task process.
5. The DAG file's parse time.
Writes bench/results/latest.json, latest.md and latest.png, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))

import fleet  # noqa: E402
import report  # noqa: E402
from common import (  # noqa: E402
    BENCH,
    CONN_IDS,
    MAIN_DATABASE,
    PYTHON,
    SPARSE_DATABASE,
    WINDOW_END,
    airflow_environment,
    database_url,
    median,
    say,
)
from fleet import COMPOSITE_INDEX, TIME_INDEX, FleetSpec  # noqa: E402
from machine import code_identity, machine_info  # noqa: E402
from measure import Measurement, measure  # noqa: E402
from pg import ColdCache, write_mark, writes_since  # noqa: E402
from variants import (  # noqa: E402
    FLOOR_QUERIES,
    RunResult,
    explain_floor,
    plan_shape,
    run_floor,
    run_ours,
    run_seed_like,
    run_staging_pattern,
)

from device_sync.config import Settings, load_settings  # noqa: E402

BASE_DEVICES = 1000
SPARSE_FACTORS = (1, 3, 10)
SPARSE_STEP_MINUTES = 10
SPARSE_HOURS = 2
WINDOWS = {"1h": 60, "6h": 360, "24h": 1440}
COLD_WINDOWS = ("1h", "24h")  # the 6 h window is for the chart: warm runs only
APPLYING = ("ours", "ours_n2", "seed_like", "staging_pattern")
NO_CHANGE_WAL_LIMIT = 100_000  # bytes: "100 kB" as the report prints it
RSS_GROWTH_LIMIT = 0.20
SUBPROCESS_TIMEOUT_SECONDS = 900


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=1.0, help="fleet size: 1,000 devices x scale (default 1)")
    parser.add_argument("--warm", type=int, default=3, help="warm runs per measurement; the median is reported")
    parser.add_argument("--reuse", action="store_true", help="keep the fleet when bench.fleet says it is the same")
    parser.add_argument(
        "--cold",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="cold runs (restart PostgreSQL, drop the page cache); default: when root and pg_ctlcluster exist, "
        "and only while no other database has client sessions",
    )
    parser.add_argument("--skip-sparse", action="store_true", help="skip the sparse fleets (fleet size, RSS)")
    parser.add_argument("--output-dir", type=Path, default=BENCH / "results")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.warm < 1:
        parser.error("--scale must be positive and --warm at least 1")
    return args


class Bench:
    """One benchmark run: its options, the package's settings per database, and the report being built."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.cold = ColdCache.detect(args.cold, (MAIN_DATABASE, SPARSE_DATABASE))
        self.settings = {database: settings_for(conn_id) for database, conn_id in CONN_IDS.items()}
        self.report: dict[str, Any] = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python bench/run.py", *sys.argv[1:]]),
            "options": {
                "scale": args.scale,
                "warm": args.warm,
                "reuse": args.reuse,
                "cold_enabled": self.cold.enabled,
                "cold_disabled_reason": self.cold.reason,
                "window_end": WINDOW_END.isoformat(),
            },
            "machine": machine_info(),
            "code": code_identity(),  # and code_at_end: the package may be edited while the benchmark runs
            "indexes": {},
            "configs": {},
        }

    # --- the main fleet -------------------------------------------------------------------------------------

    def prepare_main_fleet(self) -> None:
        spec = FleetSpec(devices=round(BASE_DEVICES * self.args.scale))
        info = fleet.reusable(MAIN_DATABASE, spec) if self.args.reuse else None
        if info:
            say(f"Reusing the fleet in {MAIN_DATABASE} ({info['measurement_rows']:,} measurements)")
            info["reused"] = True
        else:
            say(f"Generating the fleet in {MAIN_DATABASE}: {spec.devices:,} devices (scale {self.args.scale:g})")
            info = {**fleet.generate(MAIN_DATABASE, spec), "reused": False}
            say(
                f"  generated {info['measurement_rows']:,} measurements in {info['generation_seconds']:.1f} s, "
                f"VACUUM ANALYZE {info['vacuum_analyze_seconds']:.1f} s; target {info['target_rows']:,} rows"
            )
        self.report["fleet"] = {key: value for key, value in info.items() if key != "generated_at"}

        time_index = fleet.recorded_index(MAIN_DATABASE, TIME_INDEX) if info["reused"] else None
        if time_index is None:
            time_index = fleet.build_index(MAIN_DATABASE, TIME_INDEX)
        self.report["indexes"]["time"] = time_index
        say(
            f"  time index: {time_index['build_seconds']:.1f} s{' (recorded, reused)' if time_index['reused'] else ''}"
            f", {report.size(time_index['index_bytes'])}"
        )
        if info["reused"]:
            fleet.drop_index(MAIN_DATABASE, COMPOSITE_INDEX)  # configuration (a) is the time index alone

    def build_recommended_index(self) -> None:
        say("Building the recommended index (device_id, parameter_id, time)")
        built = fleet.build_index(MAIN_DATABASE, COMPOSITE_INDEX)
        self.report["indexes"]["recommended"] = built
        say(
            f"  built in {built['build_seconds']:.1f} s ({report.size(built['index_bytes'])}), "
            f"VACUUM ANALYZE {built['vacuum_analyze_seconds']:.1f} s"
        )

    # --- one index configuration ----------------------------------------------------------------------------

    def measure_config(self, config: str, windows: tuple[str, ...]) -> None:
        composite = config == "recommended"
        say(f"Configuration: {report.CONFIGS[config]}")
        results = {window: self.measure_window(config, window, composite) for window in windows}
        self.report["configs"][config] = {"label": report.CONFIGS[config], "windows": results}

    def measure_window(self, config: str, window: str, composite: bool) -> dict[str, Any]:
        minutes = WINDOWS[window]
        url = database_url(MAIN_DATABASE)
        settings = self.settings[MAIN_DATABASE]
        runners: dict[str, Callable[[], RunResult] | str] = {
            "ours": lambda: run_ours(settings, WINDOW_END, minutes),
            "ours_n2": lambda: run_ours(settings, WINDOW_END, minutes, shards=2),
            "seed_like": lambda: run_seed_like(url, WINDOW_END, minutes),
            "staging_pattern": lambda: run_staging_pattern(url, WINDOW_END, minutes),
            "floor_plain_distinct": lambda: run_floor(url, "plain_distinct", WINDOW_END, minutes),
            "floor_loose_index_scan": (
                (lambda: run_floor(url, "loose_index_scan", WINDOW_END, minutes))
                if composite
                else "needs the recommended index"
            ),
        }
        cold = self.cold if window in COLD_WINDOWS else None
        variants: dict[str, dict[str, Any]] = {}
        measured: dict[str, Measurement] = {}
        for variant, runner in runners.items():
            label = f"{report.CONFIGS[config]}, {window}, {report.VARIANT_LABELS[variant]}"
            if isinstance(runner, str):
                say(f"  {label}: skipped ({runner})")
                variants[variant] = {"skipped": runner}
                continue
            after = check_target if variant in APPLYING else None
            measured[variant] = measure(
                label, runner, lambda: fleet.restore_target(MAIN_DATABASE), warm=self.args.warm, cold=cold, after=after
            )
            variants[variant] = measured[variant].to_json()
        plans = {}
        for query in FLOOR_QUERIES:
            if f"floor_{query}" in measured:
                text = explain_floor(url, query, WINDOW_END, minutes)
                plans[query] = {"text": text, "shape": plan_shape(text)}
        floors = {
            query: measured[f"floor_{query}"].warm_median for query in FLOOR_QUERIES if f"floor_{query}" in measured
        }
        best = min(floors, key=lambda query: floors[query] or float("inf"))
        ours = measured["ours"].warm_median
        others = {name: measured[name].warm_median for name in ("seed_like", "staging_pattern")}
        checksums = {
            name: sorted({run.info["target"]["checksum"] for run in all_runs(measured[name])})
            for name in APPLYING
            if name in measured
        }
        return {
            "lookback_minutes": minutes,
            "variants": variants,
            "plans": plans,
            "floor": {"query": best, "seconds": floors[best], "candidates": floors},
            "ratios": {
                # how many times faster ours is than each alternative; ours against the floor as a time ratio
                "seed_like_vs_ours": ratio(others["seed_like"], ours),
                "staging_pattern_vs_ours": ratio(others["staging_pattern"], ours),
                "ours_vs_floor": ratio(ours, floors[best]),
            },
            "n1_vs_n2": {
                f"n{shards}": {
                    "aggregation_seconds": measured[name].step_medians().get("aggregate_recent_measurements"),
                    "total_seconds": measured[name].warm_median,
                }
                for shards, name in ((1, "ours"), (2, "ours_n2"))
            },
            "target_checksums": checksums,
            "results_agree": len({value for values in checksums.values() for value in values}) == 1,
        }

    # --- no-change rerun ------------------------------------------------------------------------------------

    def no_change_rerun(self, window: str = "24h") -> None:
        minutes = WINDOWS[window]
        url = database_url(MAIN_DATABASE)
        settings = self.settings[MAIN_DATABASE]
        say(f"No-change rerun ({window} window, recommended index)")
        runs: dict[str, Callable[[], RunResult]] = {
            "ours": lambda: run_ours(settings, WINDOW_END, minutes),
            "staging_pattern": lambda: run_staging_pattern(url, WINDOW_END, minutes),
        }
        results: dict[str, Any] = {"config": report.CONFIGS["recommended"], "window": window.replace("h", " h")}
        for variant, run in runs.items():
            fleet.restore_target(MAIN_DATABASE)
            first = run()
            mark = write_mark(url)
            second = run()
            writes = writes_since(url, mark, MAIN_DATABASE)
            reported = sum(int(second.info[key]) for key in ("inserted", "updated", "deleted"))
            results[variant] = {
                "first_run_changes": {key: first.info[key] for key in ("inserted", "updated", "deleted")},
                "rerun_changes": {key: second.info[key] for key in ("inserted", "updated", "deleted")},
                "rows_reported": reported,
                **writes,
                "seconds": second.seconds,
            }
            say(
                f"  {report.VARIANT_LABELS[variant]}: {reported} rows reported, {writes['rows_written']} in pg_stat, "
                f"WAL {report.size(writes['wal_bytes_this_database'])} of this database "
                f"({report.size(writes['wal_bytes_cluster'])} cluster-wide)"
            )
        self.report["no_change_rerun"] = results

    # --- peak RSS and fleet size ----------------------------------------------------------------------------

    def task_process_rss(self, database: str, minutes: int) -> dict[str, Any]:
        fleet.restore_target(database)
        return run_child(
            "task_process.py",
            "--conn-id",
            CONN_IDS[database],
            "--window-end",
            WINDOW_END.isoformat(),
            "--lookback-minutes",
            str(minutes),
        )

    def main_fleet_rss(self, window: str = "1h") -> None:
        say(f"Peak RSS of a task process on the main fleet ({window} window)")
        rss = self.task_process_rss(MAIN_DATABASE, WINDOWS[window])
        self.report["rss_main_fleet"] = {"window": window.replace("h", " h"), **rss}
        say(f"  peak RSS {rss['peak_rss_kb'] / 1024:.0f} MiB ({rss['observed_pairs']:,} pairs)")

    def sparse_fleets(self, window: str = "24h") -> None:
        minutes = WINDOWS[window]
        settings = self.settings[SPARSE_DATABASE]
        fleets = []
        for factor in SPARSE_FACTORS:
            spec = FleetSpec(
                devices=round(BASE_DEVICES * self.args.scale * factor),
                step_minutes=SPARSE_STEP_MINUTES,
                hours=SPARSE_HOURS,
            )
            say(
                f"Sparse fleet {factor}{report.TIMES}: {spec.devices:,} devices, "
                f"every {spec.step_minutes} min over {spec.hours} h"
            )
            info = fleet.generate(SPARSE_DATABASE, spec)
            indexes = [fleet.build_index(SPARSE_DATABASE, index) for index in (TIME_INDEX, COMPOSITE_INDEX)]
            say(
                f"  {info['measurement_rows']:,} measurements in {info['generation_seconds']:.1f} s, indexes "
                f"{sum(index['build_seconds'] for index in indexes):.1f} s"
            )
            ours = measure(
                f"sparse {factor}{report.TIMES}, ours",
                lambda: run_ours(settings, WINDOW_END, minutes),
                lambda: fleet.restore_target(SPARSE_DATABASE),
                warm=self.args.warm,
                cold=None,
            )
            rss = self.task_process_rss(SPARSE_DATABASE, minutes)
            say(f"  peak RSS of the task process: {rss['peak_rss_kb'] / 1024:.0f} MiB")
            fleets.append(
                {
                    "factor": factor,
                    "devices": spec.devices,
                    "pairs": int(ours.warm[0].info["observed_pairs"]),
                    "measurement_rows": info["measurement_rows"],
                    "target_rows": info["target_rows"],
                    "generation_seconds": info["generation_seconds"],
                    "index_build_seconds": {index["index_name"]: index["build_seconds"] for index in indexes},
                    "ours": ours.to_json(),
                    "rss": rss,
                }
            )
        self.report["sparse"] = {
            "step_minutes": SPARSE_STEP_MINUTES,
            "hours": SPARSE_HOURS,
            "window": window.replace("h", " h"),
            "fleets": fleets,
        }

    # --- DAG parse ------------------------------------------------------------------------------------------

    def parse_time(self, runs: int = 3) -> None:
        say("DAG parse time")
        results = []
        for _ in range(runs):
            results.append(run_child("parse_dag.py"))
        parse = {
            "runs": results,
            "parse_seconds_median": median([run["parse_seconds"] for run in results]),
            "airflow_import_seconds_median": median([run["airflow_import_seconds"] for run in results]),
            "dagbag_stats_seconds_median": median(
                [run["dagbag_stats_seconds"] for run in results if run["dagbag_stats_seconds"] is not None]
            ),
            "import_errors": results[-1]["import_errors"],
        }
        self.report["parse"] = parse
        say(f"  {parse['parse_seconds_median']:.3f} s (Airflow import {parse['airflow_import_seconds_median']:.2f} s)")

    # --- targets --------------------------------------------------------------------------------------------

    def targets(self) -> list[dict[str, Any]]:
        targets = []
        rerun = self.report.get("no_change_rerun", {}).get("ours")
        if rerun:
            written = max(rerun["rows_reported"], rerun["rows_written"])
            targets.append(target("no-change rerun of ours writes 0 rows", f"{written} rows", written == 0))
            wal = rerun["wal_bytes_this_database"]
            wal = rerun["wal_bytes_cluster"] if wal is None else wal
            targets.append(
                target("no-change rerun of ours writes < 100 kB of WAL", report.size(wal), wal < NO_CHANGE_WAL_LIMIT)
            )
        speed = (
            (
                "recommended",
                "seed_like_vs_ours",
                8.0,
                f"ours ≥ 8{report.TIMES} faster than seed-like (recommended index, 24 h)",
            ),
            (
                "recommended",
                "staging_pattern_vs_ours",
                5.0,
                f"ours ≥ 5{report.TIMES} faster than the staging pattern (recommended index, 24 h)",
            ),
        )
        for config, key, limit, name in speed:
            value = self.report["configs"].get(config, {}).get("windows", {}).get("24h", {}).get("ratios", {}).get(key)
            if value is not None:
                targets.append(target(name, f"{value:.1f}{report.TIMES}", value >= limit))
        for config, limit in (("recommended", 1.5), ("time_index", 1.2)):
            value = (
                self.report["configs"]
                .get(config, {})
                .get("windows", {})
                .get("24h", {})
                .get("ratios", {})
                .get("ours_vs_floor")
            )
            if value is not None:
                targets.append(
                    target(
                        f"ours ≤ {limit}{report.TIMES} the floor ({report.CONFIGS[config]}, 24 h)",
                        f"{value:.2f}{report.TIMES}",
                        value <= limit,
                    )
                )
        sparse = {item["factor"]: item for item in self.report.get("sparse", {}).get("fleets", [])}
        if 1 in sparse and 10 in sparse:
            small, large = sparse[1]["rss"]["peak_rss_kb"], sparse[10]["rss"]["peak_rss_kb"]
            growth = large / small - 1
            targets.append(
                target(
                    f"peak RSS of a task process at 10{report.TIMES} pairs within +20 % of 1{report.TIMES}",
                    f"{small / 1024:.0f} → {large / 1024:.0f} MiB ({growth:+.1%})",
                    growth <= RSS_GROWTH_LIMIT,
                )
            )
        for config, result in self.report["configs"].items():
            for window, measured in result["windows"].items():
                targets.append(
                    target(
                        f"check: ours, seed-like and staging pattern leave the same table "
                        f"({report.CONFIGS[config]}, {window.replace('h', ' h')})",
                        "same checksum" if measured["results_agree"] else str(measured["target_checksums"]),
                        measured["results_agree"],
                    )
                )
        parse = self.report.get("parse")
        if parse:
            errors = parse["import_errors"]
            targets.append(
                target("check: the DAG file parses without import errors", f"{len(errors)} errors", not errors)
            )
        return targets


def settings_for(conn_id: str) -> Settings:
    os.environ["DEVICE_SYNC_POSTGRES_CONN_ID"] = conn_id
    try:
        return load_settings()
    finally:
        os.environ["DEVICE_SYNC_POSTGRES_CONN_ID"] = CONN_IDS[MAIN_DATABASE]


def check_target(run: RunResult) -> None:
    """After a run that applied changes (untimed): remember the fingerprint of the table it left."""
    run.info["target"] = fleet.target_checksum(MAIN_DATABASE)


def all_runs(measurement: Measurement) -> list[RunResult]:
    return [run for run in (measurement.cold, measurement.warmup, *measurement.warm) if run is not None]


def run_child(script: str, *args: str) -> dict[str, Any]:
    """Run ``bench/<script>`` in a fresh Python process (bounded); return the JSON of its last output line."""
    completed = subprocess.run(
        [PYTHON, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{script} failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator is not None and denominator else None


def target(name: str, measured: str, passed: bool) -> dict[str, Any]:
    return {"name": name, "measured": measured, "status": "PASS" if passed else "FAIL", "passed": passed}


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    home = Path(tempfile.mkdtemp(prefix="device-sync-bench-airflow-"))
    os.environ.update(airflow_environment(home))  # before anything imports Airflow
    try:
        bench = Bench(args)
        if not bench.cold.enabled:
            say(f"Cold runs off: {bench.cold.reason}")
        bench.prepare_main_fleet()
        bench.measure_config("time_index", ("1h", "24h"))
        bench.build_recommended_index()
        bench.measure_config("recommended", ("1h", "6h", "24h"))
        bench.no_change_rerun()
        bench.main_fleet_rss()
        if not args.skip_sparse:
            bench.sparse_fleets()
        bench.parse_time()
        bench.report["code_at_end"] = code_identity()
        if bench.report["code_at_end"] != bench.report["code"]:
            say("WARNING: the measured code changed during the benchmark (see code and code_at_end in latest.json)")
        bench.report["targets"] = bench.targets()
        bench.report["total_seconds"] = time.perf_counter() - started
        text = report.write(bench.report, args.output_dir)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    say(f"Done in {time.perf_counter() - started:.0f} s: {args.output_dir}/latest.json, latest.md, latest.png")
    print()
    print(text)


if __name__ == "__main__":
    main()
