-- Retention: forget run history and change log older than the configured number of days.
WITH pruned_runs AS (
    DELETE FROM {run_history} WHERE started_at < now() - make_interval(days => %(retention_days)s)
)
DELETE FROM {change_log} WHERE changed_at < now() - make_interval(days => %(retention_days)s);
