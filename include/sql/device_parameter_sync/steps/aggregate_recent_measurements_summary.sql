-- Counts for the run summary: pairs observed for active devices, and pairs with a NULL id.
SELECT
    count(*) FILTER (WHERE device_id IS NOT NULL AND parameter_id IS NOT NULL) AS observed_pairs,
    count(*) FILTER (WHERE device_id IS NULL OR parameter_id IS NULL) AS measurement_id_null
FROM {observed_pairs};
