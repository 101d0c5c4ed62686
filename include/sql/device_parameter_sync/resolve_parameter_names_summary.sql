-- Counts for the run summary: named pairs, skipped pairs by reason, duplicate parameter rows.
SELECT
    (SELECT count(*) FROM {resolved_pairs} WHERE skip_reason IS NULL) AS desired_pairs,
    (SELECT count(*) FROM {resolved_pairs} WHERE skip_reason = 'id_too_long') AS id_too_long,
    (SELECT count(*) FROM {resolved_pairs} WHERE skip_reason = 'device_name_missing') AS device_name_missing_pairs,
    (SELECT count(*) FROM {resolved_pairs} WHERE skip_reason = 'parameter_unknown') AS parameter_unknown,
    (SELECT count(*) FROM {resolved_pairs} WHERE skip_reason = 'parameter_name_missing') AS parameter_name_missing,
    (SELECT count(*) FROM iot_data.timescale_parameters WHERE parameter_id IS NULL) AS parameter_id_null,
    (SELECT count(*) - count(DISTINCT parameter_id::text)
       FROM iot_data.timescale_parameters WHERE parameter_id IS NOT NULL) AS parameter_duplicate_rows;
