-- Whether the measurements table has an index that a loose index scan can step through: a valid,
-- non-partial btree whose first three key columns are device_id, parameter_id and the time column.
-- (The catalog is read on every run, so creating or dropping the index changes the method at once.)
-- Only for a plain table: on a partitioned table (or a TimescaleDB hypertable, whose chunks inherit from it)
-- every probe would visit every partition, while the window scan prunes the partitions outside the window.
SELECT NOT EXISTS (SELECT 1 FROM pg_inherits WHERE inhparent = to_regclass(%(measurements)s))
   AND EXISTS (
    SELECT 1
    FROM pg_index AS i
    JOIN pg_class AS index_class ON index_class.oid = i.indexrelid
    JOIN pg_am AS am ON am.oid = index_class.relam
    JOIN pg_class AS table_class ON table_class.oid = i.indrelid
    WHERE i.indrelid = to_regclass(%(measurements)s)
      AND table_class.relkind = 'r'
      AND am.amname = 'btree'
      AND i.indisvalid
      AND i.indpred IS NULL
      AND i.indnkeyatts >= 3
      AND ARRAY(
          SELECT a.attname::text
          FROM generate_series(0, 2) AS k(position)
          JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[k.position]
          ORDER BY k.position
      ) = ARRAY['device_id', 'parameter_id', %(time_column)s::text]
) AS has_pair_index;
