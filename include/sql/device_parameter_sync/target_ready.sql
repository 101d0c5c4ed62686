-- Whether the target table and the staging schema exist already.
SELECT to_regclass('iot_data.device_parameters') IS NOT NULL
   AND to_regnamespace(%(staging_schema)s) IS NOT NULL AS ready;
