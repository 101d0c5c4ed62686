-- The changes of a run whose mass delete waits for a human's approval (changes.sql, computed once when the
-- question is asked): the approver pages through them (GET /device-sync/changes/pending?run_id=...), and
-- apply_changes compares their fingerprint with the delta it computes again under the writers' lock.
-- Dropped with the run's other staging tables; its primary key (device_id, parameter_id) is added after.
CREATE UNLOGGED TABLE {pending_changes} AS
SELECT change.*
FROM ({changes}) AS change;
