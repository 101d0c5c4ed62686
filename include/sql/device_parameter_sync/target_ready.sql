-- Whether the target table and the package's own schema (with its run history) exist already.
SELECT to_regclass('iot_data.device_parameters') IS NOT NULL
   AND to_regclass(%(run_history)s) IS NOT NULL AS ready;
