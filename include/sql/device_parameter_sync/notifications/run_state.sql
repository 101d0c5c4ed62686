-- What a failure or recovery message says of a run: its history row (window, error, guard) and the status
-- of the run that finished before it started (a success after a failure is a recovery).
SELECT r.window_start, r.window_end, r.status, r.error, r.guard,
       (SELECT p.status FROM {run_history} AS p
        WHERE p.run_id <> r.run_id AND p.finished_at IS NOT NULL AND p.finished_at <= coalesce(r.finished_at, now())
        ORDER BY p.finished_at DESC LIMIT 1) AS previous_status
FROM {run_history} AS r
WHERE r.run_id = %(run_id)s;
