-- Names every observed pair. A pair that cannot be named is kept with a skip_reason: it is neither
-- inserted nor deleted (bad source data must not delete a row that is still being reported).
-- A name made only of Unicode whitespace or invisible characters (%(blank_name)s) is missing.
-- Duplicate parameter rows resolve deterministically: a usable name first, then the smallest name.
CREATE UNLOGGED TABLE {resolved_pairs} AS
WITH parameters AS (
    SELECT DISTINCT ON (parameter_id::text)
           parameter_id::text AS parameter_id,
           parameter_name
    FROM iot_data.timescale_parameters
    WHERE parameter_id IS NOT NULL
    ORDER BY parameter_id::text, (parameter_name IS NULL OR parameter_name ~ %(blank_name)s), parameter_name
)
SELECT observed.device_id,
       observed.parameter_id,
       devices.device_name,
       parameters.parameter_name,
       CASE
           -- ids longer than a primary-key index entry can hold would fail the whole apply
           WHEN octet_length(observed.device_id) > 1024 OR octet_length(observed.parameter_id) > 1024
               THEN 'id_too_long'
           WHEN devices.name_missing THEN 'device_name_missing'
           WHEN parameters.parameter_id IS NULL THEN 'parameter_unknown'
           WHEN parameters.parameter_name IS NULL OR parameters.parameter_name ~ %(blank_name)s
               THEN 'parameter_name_missing'
       END AS skip_reason
FROM {observed_pairs} AS observed
JOIN {active_devices} AS devices ON devices.device_id = observed.device_id
LEFT JOIN parameters ON parameters.parameter_id = observed.parameter_id
WHERE observed.parameter_id IS NOT NULL;
