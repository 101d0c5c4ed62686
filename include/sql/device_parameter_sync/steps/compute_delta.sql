-- Counts of this run's changes by operation (see changes.sql), without changing anything.
SELECT
    count(*) FILTER (WHERE operation = 'insert') AS inserts,
    count(*) FILTER (WHERE operation = 'update') AS updates,
    count(*) FILTER (WHERE operation = 'delete') AS deletes
FROM ({changes}) AS changes;
