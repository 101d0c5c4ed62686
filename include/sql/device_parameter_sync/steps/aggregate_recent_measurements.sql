-- This shard's observed pairs: the SELECT of observed_pairs_skip_scan.sql or observed_pairs_window_scan.sql
-- over the measurements table or, for a partitioned table, the UNION of one of them per partition that
-- overlaps the window (device_sync.partitions), so that a pair reported in several partitions is staged once.
CREATE UNLOGGED TABLE {observed_pairs} AS
{pairs};
