"""The benchmark's outputs: latest.json (everything), latest.md (the tables) and latest.png (two charts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import rounded

TIMES = "\N{MULTIPLICATION SIGN}"
CONFIGS = {"time_index": "time index only", "recommended": "recommended index"}
TABLE_WINDOWS = {"1h": "1 h", "24h": "24 h"}
VARIANT_LABELS = {
    "ours": "ours (N=1)",
    "ours_n2": "ours, N=2 shards",
    "seed_like": "seed-like (row by row)",
    "staging_pattern": "staging pattern",
    "floor_plain_distinct": "floor (i): plain DISTINCT",
    "floor_loose_index_scan": "floor (ii): loose index scan",
}
RATIOS = {
    "seed_like_vs_ours": "speed-up: seed-like / ours",
    "staging_pattern_vs_ours": "speed-up: staging pattern / ours",
}
RATIOS_FLOOR = {"ours_vs_floor": "ours / floor"}
OURS_STEPS = (
    "discover_active_devices",
    "aggregate_recent_measurements",
    "resolve_parameter_names",
    "compute_delta",
    "apply_changes",
)


def seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 10:
        return f"{value:.1f} s"
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def size(value: float | None) -> str:
    if value is None:
        return "—"
    for unit, factor in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value:.0f} B"


def mib(kilobytes: float | None) -> str:
    return "—" if kilobytes is None else f"{kilobytes / 1024:.0f} MiB"


def _cell(measurement: Mapping[str, Any] | None) -> str:
    if not measurement:
        return "—"
    if measurement.get("skipped"):
        return f"n/a ({measurement['skipped']})"
    text = seconds(measurement["warm_median_seconds"])
    if measurement.get("cold_seconds") is not None:
        text += f" (cold {seconds(measurement['cold_seconds'])})"
    return text


def _n2_cell(measurement: Mapping[str, Any] | None) -> str:
    if not measurement or measurement.get("skipped"):
        return _cell(measurement)
    aggregation = measurement["warm_step_median_seconds"].get("aggregate_recent_measurements")
    return f"{_cell(measurement)}; aggregation {seconds(aggregation)}"


def _columns(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(config key, window key, header) of the main table's columns."""
    return [
        (config, window, f"{config_label}, {window_label}")
        for config, config_label in CONFIGS.items()
        if config in report["configs"]
        for window, window_label in TABLE_WINDOWS.items()
    ]


def _window(report: Mapping[str, Any], config: str, window: str) -> Mapping[str, Any]:
    result: Mapping[str, Any] = report["configs"][config]["windows"].get(window, {})
    return result


def markdown(report: Mapping[str, Any]) -> str:
    columns = _columns(report)
    machine = report["machine"]
    fleet = report["fleet"]
    indexes = report["indexes"]
    lines = [
        "# device-sync benchmark",
        "",
        f"Machine: {machine['cpu_model']}, {machine['cores']} cores, {machine['ram_gib']:.1f} GiB RAM; "
        f"PostgreSQL {machine['postgres_version'].split()[0]} (shared_buffers {machine['shared_buffers']}, "
        f"work_mem {machine['work_mem']}, max_parallel_workers_per_gather "
        f"{machine['max_parallel_workers_per_gather']}, jit {machine['jit']}); Python {machine['python']}.",
        "",
        f"Fleet (scale {report['options']['scale']:g}): {int(fleet['spec']['devices']):,} devices {TIMES} "
        f"{fleet['spec']['per_device']} parameters, one measurement per {fleet['spec']['step_minutes']} min over "
        f"{fleet['spec']['hours']} h: {fleet['measurement_rows']:,} measurements "
        f"({size(fleet['measurements_bytes'])}), target {fleet['target_rows']:,} rows"
        f"{' (reused)' if fleet.get('reused') else ''}. Generated in {seconds(fleet['generation_seconds'])}, "
        f"VACUUM ANALYZE {seconds(fleet['vacuum_analyze_seconds'])}; time index built in "
        f"{seconds(indexes['time']['build_seconds'])} ({size(indexes['time']['index_bytes'])})"
        + (
            f", recommended index (device_id, parameter_id, time) in "
            f"{seconds(indexes['recommended']['build_seconds'])} ({size(indexes['recommended']['index_bytes'])})."
            if "recommended" in indexes
            else "."
        ),
        "",
        f"Each cell: median of {report['options']['warm']} warm runs (cold run in brackets: PostgreSQL "
        "restarted and the page cache dropped first). Every run starts from the same drifted target. "
        f"Windows end at {report['options']['window_end']}.",
        "",
        "| variant | " + " | ".join(header for _, _, header in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for variant, label in VARIANT_LABELS.items():
        cells = []
        for config, window, _ in columns:
            measurement = _window(report, config, window).get("variants", {}).get(variant)
            cells.append(_n2_cell(measurement) if variant == "ours_n2" else _cell(measurement))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    floor_cells = []
    for config, window, _ in columns:
        floor = _window(report, config, window).get("floor", {})
        floor_cells.append(f"{seconds(floor.get('seconds'))} ({floor.get('query', '—')})" if floor else "—")
    lines.append("| **floor** (faster of the two) | " + " | ".join(floor_cells) + " |")
    for key, label in {**RATIOS, **RATIOS_FLOOR}.items():
        cells = []
        for config, window, _ in columns:
            ratio = _window(report, config, window).get("ratios", {}).get(key)
            cells.append(f"{ratio:.2f}{TIMES}" if ratio is not None else "—")
        lines.append(f"| *{label}* (warm) | " + " | ".join(cells) + " |")

    lines += ["", "Ours per step (warm median, N=1):", ""]
    lines += ["| step | " + " | ".join(header for _, _, header in columns) + " |", "|---|" + "---|" * len(columns)]
    for step in (*OURS_STEPS, "method"):
        cells = []
        for config, window, _ in columns:
            ours = _window(report, config, window).get("variants", {}).get("ours")
            if not ours:
                cells.append("—")
            elif step == "method":
                cells.append(f"`{ours['warm_runs'][0]['info'].get('method')}`" if ours["warm_runs"] else "—")
            else:
                cells.append(seconds(ours["warm_step_median_seconds"].get(step)))
        lines.append(f"| {step} | " + " | ".join(cells) + " |")

    lines += ["", "Floor plans (EXPLAIN ANALYZE, warm; full plans in latest.json):", ""]
    lines += ["| configuration, window | query | plan shape |", "|---|---|---|"]
    for config, window, header in columns:
        for query, plan in _window(report, config, window).get("plans", {}).items():
            lines.append(f"| {header} | {query} | {plan['shape']} |")

    rerun = report.get("no_change_rerun")
    if rerun:
        lines += [
            "",
            f"No-change rerun ({rerun['config']}, {rerun['window']} window, right after a run that applied the drift):",
            "",
            "| variant | rows written (reported / pg_stat) | WAL of this database | WAL, whole cluster | time |",
            "|---|---|---|---|---|",
        ]
        for variant in ("ours", "staging_pattern"):
            item = rerun[variant]
            lines.append(
                f"| {VARIANT_LABELS[variant]} | {item['rows_reported']} / {item['rows_written']} | "
                f"{size(item['wal_bytes_this_database'])} | {size(item['wal_bytes_cluster'])} | "
                f"{seconds(item['seconds'])} |"
            )
        for variant in ("ours", "staging_pattern"):
            wal = rerun[variant].get("wal_this_database")
            if wal:
                parts = ", ".join(f"{category} {size(value)}" for category, value in wal["by_category"].items())
                lines.append(f"\nWAL of the rerun of {VARIANT_LABELS[variant]} by kind: {parts}.")

    sparse = report.get("sparse")
    if sparse:
        lines += [
            "",
            f"Fleet size (sparse fleets: one measurement per {sparse['step_minutes']} min over {sparse['hours']} h, "
            f"recommended index, {sparse['window']} window; peak RSS of a fresh task process running all steps):",
            "",
            "| fleet | devices | pairs | measurements | ours (warm median) | aggregation | peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for fleet_size in sparse["fleets"]:
            lines.append(
                f"| {fleet_size['factor']}{TIMES} | {fleet_size['devices']:,} | {fleet_size['pairs']:,} | "
                f"{fleet_size['measurement_rows']:,} | {seconds(fleet_size['ours']['warm_median_seconds'])} | "
                f"{seconds(fleet_size['ours']['warm_step_median_seconds'].get('aggregate_recent_measurements'))} | "
                f"{mib((fleet_size.get('rss') or {}).get('peak_rss_kb'))} |"
            )
    main_rss = report.get("rss_main_fleet")
    if main_rss:
        lines += [
            "",
            f"Peak RSS of a task process on the main fleet ({main_rss['window']} window): "
            f"{mib(main_rss['peak_rss_kb'])} (after imports: {mib(main_rss['rss_after_imports_kb'])}).",
        ]

    parse = report.get("parse")
    if parse:
        lines += [
            "",
            f"DAG parse: {seconds(parse['parse_seconds_median'])} for dags/device_parameter_sync.py "
            f"(median of {len(parse['runs'])} fresh processes, Airflow's own import of "
            f"{seconds(parse['airflow_import_seconds_median'])} excluded; DagBag's dagbag_stats duration "
            f"{seconds(parse['dagbag_stats_seconds_median'])}).",
        ]

    lines += ["", "| target / check | measured | status |", "|---|---|---|"]
    for target in report["targets"]:
        lines.append(f"| {target['name']} | {target['measured']} | {target['status']} |")
    code = report["code"]
    changed = report.get("code_at_end", code) != code
    lines += [
        "",
        f"Full benchmark run: {seconds(report['total_seconds'])}; command: `{report['command']}`; code: commit "
        f"{code['git_head'][:10]}{' with uncommitted changes' if code['uncommitted_changes'] else ''}"
        + (" (**the code changed during the run**)" if changed else "")
        + ".",
        "",
    ]
    return "\n".join(lines)


def _warm_median(window: Mapping[str, Any], variant: str) -> float | None:
    if variant == "floor":
        floor: float | None = window.get("floor", {}).get("seconds")
        return floor
    value: float | None = window["variants"].get(variant, {}).get("warm_median_seconds")
    return value


def chart(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    figure, (by_window, by_fleet) = plt.subplots(1, 2, figsize=(12, 4.8))
    recommended = report["configs"].get("recommended", {}).get("windows", {})
    window_keys = sorted(recommended, key=lambda key: recommended[key]["lookback_minutes"])
    hours = [recommended[key]["lookback_minutes"] / 60 for key in window_keys]
    series = {
        "ours (N=1)": "ours",
        "ours (N=2)": "ours_n2",
        "seed-like": "seed_like",
        "staging pattern": "staging_pattern",
        "floor": "floor",
    }
    for label, variant in series.items():
        points = [(hour, _warm_median(recommended[key], variant)) for hour, key in zip(hours, window_keys, strict=True)]
        present = [(hour, value) for hour, value in points if value is not None]
        if present:
            by_window.plot([hour for hour, _ in present], [value for _, value in present], marker="o", label=label)
    by_window.set_xscale("log")
    by_window.set_yscale("log")
    by_window.set_xticks(hours, [f"{hour:g} h" for hour in hours])
    by_window.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    by_window.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g} s"))
    by_window.yaxis.set_minor_formatter(NullFormatter())
    by_window.set_xlabel("window length")
    by_window.set_ylabel("seconds (warm median)")
    by_window.set_title("Time vs window length (recommended index)")
    by_window.grid(True, which="both", alpha=0.3)
    by_window.legend()

    sparse = report.get("sparse")
    if sparse and sparse["fleets"]:
        pairs = [fleet["pairs"] for fleet in sparse["fleets"]]
        total = [fleet["ours"]["warm_median_seconds"] for fleet in sparse["fleets"]]
        aggregation = [
            fleet["ours"]["warm_step_median_seconds"].get("aggregate_recent_measurements") for fleet in sparse["fleets"]
        ]
        by_fleet.plot(pairs, total, marker="o", label="ours, all steps")
        by_fleet.plot(pairs, aggregation, marker="s", label="ours, aggregation step")
        for fleet, x, y in zip(sparse["fleets"], pairs, total, strict=True):
            by_fleet.annotate(f"{fleet['factor']}{TIMES}", (x, y), textcoords="offset points", xytext=(4, 6))
        by_fleet.set_xlabel("pairs (device, parameter) in the fleet")
        by_fleet.set_ylabel("seconds (warm median)")
        by_fleet.set_title(f"Ours vs fleet size (sparse fleets, {sparse['window']} window)")
        by_fleet.set_xlim(0, max(pairs) * 1.1)
        by_fleet.set_ylim(bottom=0)
        by_fleet.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g} s"))
        by_fleet.grid(True, alpha=0.3)
        by_fleet.legend()
    else:
        by_fleet.text(0.5, 0.5, "sparse fleets skipped", ha="center", va="center")
        by_fleet.set_axis_off()
    machine = report["machine"]
    figure.suptitle(
        f"device-sync benchmark: scale {report['options']['scale']:g}, {report['fleet']['measurement_rows']:,} "
        f"measurements; {machine['cores']} cores, PostgreSQL {machine['postgres_version'].split()[0]}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write(report: Mapping[str, Any], output_dir: Path) -> str:
    """Write latest.json, latest.md and latest.png; return the Markdown."""
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "latest.json").write_text(json.dumps(rounded(report), indent=2, default=str) + "\n")
    text = markdown(report)
    (output_dir / "latest.md").write_text(text)
    chart(report, output_dir / "latest.png")
    return text
