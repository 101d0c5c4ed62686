-- What the guards need, read under the writers' lock: the table's size (and within the run's device
-- scope), the pairs observed, and the newest window already applied.
SELECT
    (SELECT count(*) FROM iot_data.device_parameters) AS table_rows,
    (SELECT count(*) FROM iot_data.device_parameters
      WHERE %(device_ids)s::text[] IS NULL OR device_id = ANY (%(device_ids)s::text[])) AS scoped_rows,
    (SELECT count(*) FROM {observed_pairs} WHERE device_id IS NOT NULL AND parameter_id IS NOT NULL)
        AS observed_pairs,
    (SELECT max(window_end) FROM {run_history} WHERE status = 'success' AND applied) AS newest_applied_window_end;
