-- The health check's one query (see api.py): the database's now(), the last *finished* run (by finished_at,
-- not started_at: a run that started earlier may finish later), the newest applied sync (partial index), and
-- how many runs since that sync succeeded without applying because their window was older (guard
-- older_window). The history is bounded by DEVICE_SYNC_HISTORY_RETENTION_DAYS, so the scans stay small.
SELECT now() AS now,
       last_run.status AS last_run_status,
       last_run.error AS last_run_error,
       last_run.guard AS last_run_guard,
       last_run.finished_at AS last_run_finished_at,
       last_applied.finished_at AS last_applied_at,
       last_applied.window_start AS last_applied_window_start,
       last_applied.window_end AS last_applied_window_end,
       (SELECT count(*) FROM {run_history}
        WHERE status = 'success' AND guard = 'older_window' AND NOT applied
          AND finished_at > coalesce(last_applied.finished_at, '-infinity')) AS older_window_runs
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT status, error, guard, finished_at FROM {run_history}
    WHERE finished_at IS NOT NULL AND status IN ('success', 'failed')
    ORDER BY finished_at DESC LIMIT 1
) AS last_run ON true
LEFT JOIN LATERAL (
    SELECT finished_at, window_start, window_end FROM {run_history}
    WHERE status = 'success' AND applied ORDER BY finished_at DESC LIMIT 1
) AS last_applied ON true;
