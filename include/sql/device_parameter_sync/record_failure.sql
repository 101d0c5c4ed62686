-- Marks this run failed in the history; a run that already succeeded (a later, failing task such as
-- a metrics outage) keeps its success.
INSERT INTO {run_history} AS h (run_id, dag_id, logical_date, window_start, window_end, started_at,
                                finished_at, status, dry_run, applied, device_scope, error)
VALUES (%(run_id)s, %(dag_id)s, %(logical_date)s, %(window_start)s, %(window_end)s, %(started_at)s,
        %(finished_at)s, 'failed', %(dry_run)s, false, %(device_scope)s, %(error)s)
ON CONFLICT (run_id) DO UPDATE SET
    finished_at = EXCLUDED.finished_at,
    status = 'failed',
    window_start = coalesce(EXCLUDED.window_start, h.window_start),
    window_end = coalesce(EXCLUDED.window_end, h.window_end),
    error = EXCLUDED.error
WHERE h.status <> 'success';
