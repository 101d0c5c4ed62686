-- Counts for the run summary: named pairs, skipped pairs by reason, duplicate parameter rows.
SELECT pairs.desired_pairs, pairs.id_too_long, pairs.device_name_missing_pairs, pairs.parameter_unknown,
       pairs.parameter_name_missing, parameters.parameter_id_null, parameters.parameter_duplicate_rows
FROM (
    SELECT count(*) FILTER (WHERE skip_reason IS NULL) AS desired_pairs,
           count(*) FILTER (WHERE skip_reason = 'id_too_long') AS id_too_long,
           count(*) FILTER (WHERE skip_reason = 'device_name_missing') AS device_name_missing_pairs,
           count(*) FILTER (WHERE skip_reason = 'parameter_unknown') AS parameter_unknown,
           count(*) FILTER (WHERE skip_reason = 'parameter_name_missing') AS parameter_name_missing
    FROM {resolved_pairs}
) AS pairs
CROSS JOIN (
    SELECT count(*) FILTER (WHERE parameter_id IS NULL) AS parameter_id_null,
           count(*) FILTER (WHERE parameter_id IS NOT NULL) - count(DISTINCT parameter_id::text)
               AS parameter_duplicate_rows
    FROM iot_data.timescale_parameters
) AS parameters;
