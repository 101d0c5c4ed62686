-- The migration runner's and the DAG's first look at the database (migrations.py): which of the package's
-- tables exist and whether this role may read the record of applied migrations. Only the catalog is read
-- (every role may), never to_regclass, which needs USAGE on the schema. The parameter schema: the staging schema.
WITH wanted (object, nspname, relname) AS (
    VALUES ('target', 'iot_data', 'device_parameters'),
           ('run_history', %(schema)s::text, 'run_history'),
           ('change_log', %(schema)s::text, 'change_log'),
           ('schema_version', %(schema)s::text, 'schema_version')
)
SELECT wanted.object,
       c.oid IS NOT NULL AS present,
       c.oid IS NOT NULL AND has_table_privilege(c.oid, 'SELECT') AS readable,
       EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s::text) AS schema_present
FROM wanted
LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = wanted.nspname
LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = wanted.relname AND c.relkind IN ('r', 'p')
ORDER BY wanted.object;
