-- Floor (i): the plain query that finds the distinct (device, parameter) pairs of the window, nothing else.
SELECT DISTINCT device_id, parameter_id
FROM iot_data.measurements
WHERE "time" >= %(window_start)s AND "time" < %(window_end)s;
