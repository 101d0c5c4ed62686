-- 0002: the health check's last *finished* run (health.sql: WHERE finished_at IS NOT NULL ... ORDER BY
-- finished_at DESC LIMIT 1) read from an index instead of a scan and sort of the whole run history.
CREATE INDEX IF NOT EXISTS run_history_last_finished_idx
    ON {run_history} (finished_at DESC) WHERE finished_at IS NOT NULL;
