-- A page of the run history, newest first (the total is count_runs.sql: it must be right past the end).
SELECT run_id, dag_id, logical_date, window_start, window_end, started_at, finished_at, status,
       dry_run, applied, device_scope, active_devices, observed_pairs, inserted, deleted, updated,
       skipped, skipped_by_reason, error, guard, apply_attempt, apply_host
FROM {run_history}
ORDER BY started_at DESC, run_id
LIMIT %(limit)s OFFSET %(offset)s;
