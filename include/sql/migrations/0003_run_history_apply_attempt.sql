-- 0003: which attempt of apply_changes wrote the run's row, and on which worker (Airflow's task instance
-- hostname). A run whose worker died and whose retry applied on another worker says so here (apply_attempt 2).
ALTER TABLE {run_history}
    ADD COLUMN IF NOT EXISTS apply_attempt INTEGER,
    ADD COLUMN IF NOT EXISTS apply_host TEXT;
