# device-sync: the quick-start commands and their helpers.
#   make demo   a real sync of a demo fleet with `airflow dags test` (PostgreSQL + a local moto server)
#   make test   lint, type-check and the whole test suite against real PostgreSQL and Airflow
#   make test-unit  only tests/unit: the pure logic (no database, no network), in seconds
# Each creates .venv from the pinned requirements files with uv (bootstrapped into .tools/ if missing).

SHELL := /bin/bash
PYTHON_VERSION := 3.11
UV_VERSION := 0.13.8
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
VENV := $(CURDIR)/.venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: venv demo test test-unit test-compose test-timescaledb test-platforms lint lock clean airflow airflow-stop deploy-monitoring bench dist deploy migrate
DIST ?= $(CURDIR)/dist

venv: $(VENV)/.installed

$(CURDIR)/.tools/bin/uv:
	python3 -m venv $(CURDIR)/.tools
	$(CURDIR)/.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON_VERSION) $(VENV)
	$(UV) pip sync --quiet --python $(VENV)/bin/python requirements-dev.txt
	touch $@

demo: venv
	$(if $(FORCE_DROP),DEVICE_SYNC_FORCE_DROP=$(FORCE_DROP)) $(VENV)/bin/python scripts/demo.py

# A real local Airflow (api-server, scheduler, dag-processor, triggerer) on http://127.0.0.1:8080.
# EXECUTOR=celery adds WORKERS Celery workers (default 2) with the machine's Redis as the broker
# (BROKER_URL, default redis://127.0.0.1:6379/1: an empty Redis database or one an earlier stack used, emptied
# at start; one holding other keys is refused unless BROKER_USE_NONEMPTY=1, which uses it and deletes nothing).
EXECUTOR ?= local
WORKERS ?= 2
airflow: venv
	$(if $(FORCE_DROP),DEVICE_SYNC_FORCE_DROP=$(FORCE_DROP)) $(VENV)/bin/python scripts/airflow_stack.py start \
		--executor "$(EXECUTOR)" --workers "$(WORKERS)" $(if $(BROKER_URL),--broker-url "$(BROKER_URL)") \
		$(if $(filter 1,$(BROKER_USE_NONEMPTY)),--use-nonempty-broker)

airflow-stop: venv
	$(VENV)/bin/python scripts/airflow_stack.py stop

# CloudWatch alarms and dashboard of DEVICE_SYNC_STAGE through the Airflow connection aws_default.
deploy-monitoring: venv
	$(VENV)/bin/python scripts/deploy_monitoring.py

# The installable wheel, dist/device_sync-<version>-py3-none-any.whl (the package, its SQL and stage files, the
# plugin's entry point), built with the pinned backend of build-constraints.txt; earlier wheels are removed.
dist: | $(UV)
	rm -f $(DIST)/device_sync-*.whl
	$(UV) build --quiet --wheel --build-constraint build-constraints.txt --out-dir $(DIST) .

# Amazon MWAA: the DAG file, plugins.zip (the wheel), requirements.txt and startup.sh of STAGE (dev or prod) to
# DEVICE_SYNC_DEPLOY_BUCKET (versioned), then DEVICE_SYNC_MWAA_ENVIRONMENT updated and the stage's alarms deployed;
# only what changed. DEPLOY_ARGS: --dry-run, --dags-only, --alarm-action ARN.
deploy: venv dist
	$(VENV)/bin/python scripts/deploy.py --stage "$(STAGE)" --dist "$(DIST)" $(DEPLOY_ARGS)

# The package's own tables (iot_data.device_parameters, the staging schema's history) brought to this version's
# schema as their owner (the admin): include/sql/migrations/, each applied once. MIGRATE_ARGS: --database-url URL, --check.
migrate: venv
	$(VENV)/bin/python scripts/migrate.py $(MIGRATE_ARGS)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# The whole suite: tests/unit, tests/integration (real PostgreSQL) and tests/e2e (real Airflow stacks, a browser).
test: lint
	scripts/ensure_test_tools.sh
	$(VENV)/bin/pytest

# The pure logic only (tests/unit): no PostgreSQL, no Airflow stack, no network; well under a minute.
test-unit: venv
	$(VENV)/bin/pytest tests/unit

# docker-compose.yaml run for real (tests/compose): podman with runc, the images built locally, two Celery
# workers, a DAG run through the REST API, then `down -v`. Installs podman and its helpers first (needs root).
test-compose: venv
	scripts/ensure_compose_tools.sh
	$(VENV)/bin/pytest tests/compose

# The TimescaleDB tests (tests/timescaledb): hypertables, compressed chunks included, on a throwaway server of
# their own with the extension preloaded. Builds the extension from source first when it is missing.
test-timescaledb: venv
	scripts/ensure_timescaledb.sh
	$(VENV)/bin/pytest tests/timescaledb

# The benchmark (not part of the test suite): bench/results/latest.{json,md,png}, about 15 minutes at full scale,
# as root with cold runs (options: make bench BENCH_ARGS="--scale 0.05 --warm 1 --no-cold"); then the partitioned
# cases, bench/results/partitioned.{json,md}, about 5 minutes (PARTITIONED_BENCH_ARGS="--devices 60 --runs 1").
# Amazon MWAA (tests/platforms): for Airflow 3.3.1, 3.2.1 and 3.0.6, MWAA's package set built by
# $(MWAA_PLATFORMS)/mwaa-env.sh, the requirements.txt and plugins.zip that the deploy uploads installed the way MWAA
# installs them, then import checks and real syncs with plain `airflow dags test` (a few minutes, warm cache).
MWAA_PLATFORMS ?= $(abspath $(CURDIR)/../shared/platforms)
test-platforms: venv
	DEVICE_SYNC_MWAA_PLATFORMS="$(MWAA_PLATFORMS)" UV="$(UV)" $(VENV)/bin/pytest tests/platforms

bench: venv
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)
	$(VENV)/bin/python bench/partitioned.py $(PARTITIONED_BENCH_ARGS)

# Re-pin every dependency after editing pyproject.toml's dependencies / requirements-dev.in.
lock: | $(UV)
	$(UV) pip compile --quiet --python-version $(PYTHON_VERSION) --extra celery pyproject.toml -o requirements.txt
	$(UV) pip compile --quiet --python-version $(PYTHON_VERSION) requirements-dev.in -c requirements.txt -o requirements-dev.txt

clean:
	rm -rf $(VENV) .tools .demo .airflow .pytest_cache .mypy_cache .ruff_cache .hypothesis dist
