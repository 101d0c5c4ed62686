-- The health check: the newest run and the newest successful applied sync (both index scans).
SELECT now() AS now,
       last_run.run_id AS last_run_id,
       last_run.status AS last_run_status,
       last_run.error AS last_run_error,
       last_applied.finished_at AS last_success_at,
       last_applied.window_start AS last_success_window_start,
       last_applied.window_end AS last_success_window_end
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT run_id, status, error FROM {run_history} ORDER BY started_at DESC LIMIT 1
) AS last_run ON true
LEFT JOIN LATERAL (
    SELECT finished_at, window_start, window_end FROM {run_history}
    WHERE status = 'success' AND applied ORDER BY finished_at DESC LIMIT 1
) AS last_applied ON true;
