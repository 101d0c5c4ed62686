-- Counts of the delta by operation.
SELECT
    count(*) FILTER (WHERE operation = 'insert') AS inserts,
    count(*) FILTER (WHERE operation = 'update') AS updates,
    count(*) FILTER (WHERE operation = 'delete') AS deletes
FROM {delta};
