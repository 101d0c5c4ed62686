-- The number of runs in the history for /runs' total (bounded by the retention, so an exact count is cheap).
SELECT count(*) AS total FROM {run_history};
