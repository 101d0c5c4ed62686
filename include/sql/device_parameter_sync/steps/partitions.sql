-- The partitions of the measurements table that PostgreSQL would read for the run's window (%(schemas)s and
-- %(names)s: the relations of the window query's plan, which partition pruning and TimescaleDB's chunk exclusion have
-- already cut down to those whose bounds overlap the window), with what the catalog knows of each:
--   reltuples, and the n_distinct of device_id and parameter_id (pg_stats; negative = a share of the rows),
--   whether it has its own valid btree on (device_id, parameter_id, time) for a loose index scan,
--   whether this session may read it directly (partitions carry privileges of their own),
--   whether it is the measurements table itself (an inheritance parent with rows of its own).
-- Only descendants of the measurements table count (a compressed chunk's own table is not one), and the
-- measurements table itself when it holds rows (relkind 'r': a plain table, whose pair index decides between
-- the skip scan and the window scan, or an inheritance parent with rows of its own). The catalog is read at
-- every run, so creating or dropping an index changes the method at once.
WITH RECURSIVE descendants AS (
    SELECT i.inhrelid AS relid FROM pg_inherits AS i WHERE i.inhparent = %(measurements)s::regclass
    UNION
    SELECT i.inhrelid FROM pg_inherits AS i JOIN descendants AS d ON i.inhparent = d.relid
)
SELECT c.oid::regclass::text AS relation,
       n.nspname AS schema_name,
       c.relname AS table_name,
       c.reltuples::float8 AS reltuples,
       (SELECT s.n_distinct::float8 FROM pg_stats AS s
        WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'device_id'
        ORDER BY s.inherited LIMIT 1) AS device_n_distinct,
       (SELECT s.n_distinct::float8 FROM pg_stats AS s
        WHERE s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = 'parameter_id'
        ORDER BY s.inherited LIMIT 1) AS parameter_n_distinct,
       has_table_privilege(c.oid, 'SELECT') AND has_schema_privilege(n.oid, 'USAGE') AS readable,
       c.oid = %(measurements)s::regclass AS is_parent,
       EXISTS (
           SELECT 1
           FROM pg_index AS i
           JOIN pg_class AS index_class ON index_class.oid = i.indexrelid
           JOIN pg_am AS am ON am.oid = index_class.relam
           WHERE i.indrelid = c.oid
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
       ) AS has_pair_index
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS r(schema_name, table_name)
JOIN pg_namespace AS n ON n.nspname = r.schema_name
JOIN pg_class AS c ON c.relnamespace = n.oid AND c.relname = r.table_name
WHERE c.oid IN (SELECT relid FROM descendants)
   OR (c.oid = %(measurements)s::regclass AND c.relkind = 'r')
ORDER BY c.oid::regclass::text;
