"""device-sync: keeps ``iot_data.device_parameters`` equal to what the devices reported (an Airflow 3 DAG package)."""

__version__ = "0.4.0"
