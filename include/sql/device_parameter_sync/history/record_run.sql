-- Creates or completes this run's history row. A later attempt (a retry) overwrites an earlier one.
INSERT INTO {run_history} AS h (
    run_id, dag_id, logical_date, window_start, window_end, started_at, finished_at, status, dry_run,
    applied, device_scope, active_devices, observed_pairs, inserted, deleted, updated, skipped,
    skipped_by_reason, error, guard, apply_attempt, apply_host)
VALUES (
    %(run_id)s, %(dag_id)s, %(logical_date)s, %(window_start)s, %(window_end)s, %(started_at)s,
    %(finished_at)s, %(status)s, %(dry_run)s, %(applied)s, %(device_scope)s, %(active_devices)s,
    %(observed_pairs)s, %(inserted)s, %(deleted)s, %(updated)s, %(skipped)s, %(skipped_by_reason)s,
    %(error)s, %(guard)s, %(apply_attempt)s, %(apply_host)s)
ON CONFLICT (run_id) DO UPDATE SET
    logical_date = EXCLUDED.logical_date,
    window_start = coalesce(EXCLUDED.window_start, h.window_start),
    window_end = coalesce(EXCLUDED.window_end, h.window_end),
    finished_at = EXCLUDED.finished_at,
    status = EXCLUDED.status,
    dry_run = EXCLUDED.dry_run,
    applied = EXCLUDED.applied,
    device_scope = EXCLUDED.device_scope,
    active_devices = coalesce(EXCLUDED.active_devices, h.active_devices),
    observed_pairs = coalesce(EXCLUDED.observed_pairs, h.observed_pairs),
    inserted = EXCLUDED.inserted,
    deleted = EXCLUDED.deleted,
    updated = EXCLUDED.updated,
    skipped = coalesce(EXCLUDED.skipped, h.skipped),
    skipped_by_reason = coalesce(EXCLUDED.skipped_by_reason, h.skipped_by_reason),
    error = EXCLUDED.error,
    guard = EXCLUDED.guard,
    apply_attempt = coalesce(EXCLUDED.apply_attempt, h.apply_attempt),
    apply_host = coalesce(EXCLUDED.apply_host, h.apply_host);
