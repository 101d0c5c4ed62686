-- Marks this run failed in the history; a run that already succeeded (a later, failing task such as
-- a metrics outage) keeps its success. %(keep_error)s keeps an error message recorded earlier (the
-- failing step's own message is more useful than the summary one of publish_metrics).
INSERT INTO {run_history} AS h (run_id, dag_id, logical_date, window_start, window_end, started_at,
                                finished_at, status, dry_run, applied, device_scope, error, guard)
VALUES (%(run_id)s, %(dag_id)s, %(logical_date)s, %(window_start)s, %(window_end)s, %(started_at)s,
        %(finished_at)s, 'failed', %(dry_run)s, false, %(device_scope)s, %(error)s, %(guard)s)
ON CONFLICT (run_id) DO UPDATE SET
    finished_at = EXCLUDED.finished_at,
    status = 'failed',
    window_start = coalesce(EXCLUDED.window_start, h.window_start),
    window_end = coalesce(EXCLUDED.window_end, h.window_end),
    guard = coalesce(EXCLUDED.guard, h.guard),
    error = CASE WHEN %(keep_error)s AND h.error IS NOT NULL THEN h.error ELSE EXCLUDED.error END
WHERE h.status <> 'success';
