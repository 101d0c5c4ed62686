-- Counts and a fingerprint of a set of changes: the change set is this run's changes.sql computed now, or the
-- pending_changes table written when a mass delete was put to a human. The fingerprint is the sum of a
-- 64-bit hash of every change (whole row), so it does not depend on the order rows are read in, and one
-- added, removed or renamed pair changes it.
SELECT
    count(*) FILTER (WHERE operation = 'insert') AS inserts,
    count(*) FILTER (WHERE operation = 'update') AS updates,
    count(*) FILTER (WHERE operation = 'delete') AS deletes,
    coalesce(sum(hashtextextended(change::text, 0)::numeric), 0)::text AS fingerprint
FROM {change_set} AS change;
