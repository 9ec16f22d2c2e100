# The two set-up commands: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The tests of Django's tasks framework on Sluice, run on Django 6.0 as well (make test-django60).
DJANGO_TASKS_TESTS := tests/scheduler/test_backends.py tests/acceptance/test_django_tasks.py
# The machine's PostgreSQL, when one answers; otherwise settings fall back to the embedded server.
LOCAL_PG := postgres://postgres@127.0.0.1:5432/postgres

.PHONY: install lock run test test-django60 check bench services stop-db clean

# The exact versions of requirements.lock (runtime and dev), so a new release of a dependency
# changes nothing here until `make lock` takes it in; then Sluice itself, in place (editable), so
# that its entry points (pyproject.toml: `celery beat -S sluice`, `sluice+postgresql://` results)
# are registered.
$(VENV)/.installed: requirements.lock pyproject.toml
	@test -x $(PY) || "$$(platform/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --quiet --no-deps --editable .
	@touch $@

install: $(VENV)/.installed

# Upgrading is a deliberate step: resolve pyproject.toml's ranges afresh into requirements.lock,
# then `make test` and commit the lock with what it changed.
lock:
	platform/lock-requirements

services:
	@platform/ensure-services

# Starts the platform on the embedded PostgreSQL (or DATABASE_URL) at http://127.0.0.1:8000/:
# the web server, a worker per registered group and per task queue, and the background loops,
# supervised. The shop's demo first leaves an order unpaid, which its countdown task cancels a
# minute later (the shop's delay is short here: 60 s unless SHOP_UNPAID_ORDER_TIMEOUT_S says otherwise).
run: export SHOP_UNPAID_ORDER_TIMEOUT_S ?= 60
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py shop_demo --addr $${SLUICE_ADDR:-127.0.0.1:8000}
	$(PY) manage.py serve $${SLUICE_ADDR:-127.0.0.1:8000}

# The suite runs in TEST_PROCESSES pytest processes (pytest-xdist), each on a test database of its
# own: most tests wait on servers and child processes, so two nearly halve the time on two cores.
# The embedded server is started once, before them, and named to them in DATABASE_URL. The run
# ends with its slowest tests, so that a suite growing towards its 15 minutes shows where.
TEST_PROCESSES ?= 2
test: install services
	@if [ -z "$${DATABASE_URL:-}" ] && timeout 2 bash -c '>/dev/tcp/127.0.0.1/5432' 2>/dev/null; then \
	    export DATABASE_URL=$(LOCAL_PG); echo "tests: PostgreSQL on 127.0.0.1:5432"; \
	elif [ -z "$${DATABASE_URL:-}" ]; then \
	    export DATABASE_URL="$$($(PY) -c 'from config import database; print(database.embedded_url())')" || exit 1; \
	    echo "tests: embedded PostgreSQL"; \
	else echo "tests: DATABASE_URL"; fi; \
	$(PY) manage.py makemigrations --check --dry-run >/dev/null || { echo "models and migrations differ"; exit 1; }; \
	$(VENV)/bin/lint-imports --no-cache >/dev/null || { $(VENV)/bin/lint-imports --no-cache; exit 1; }; \
	$(PY) -m pytest -n $(TEST_PROCESSES) --durations=15 $(PYTEST_ARGS) && $(MAKE) --no-print-directory test-django60

# Django's tasks framework on the oldest supported Django (6.0.x) too: a second virtualenv whose
# only package of its own is Django 6.0; everything else comes from $(VENV) through a .pth file
# (a venv's own site-packages come first on sys.path), so it builds in seconds once pip has the
# wheel. The Django-tasks tests run there, worker and shell processes included.
VENV60 := $(VENV)-django60
$(VENV60)/.installed: $(VENV)/.installed
	@test -x $(VENV60)/bin/python || "$$($(PY) -c 'import sys; print(sys._base_executable)')" -m venv $(VENV60)
	$(VENV60)/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > $(VENV60)/.purelib
	$(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))' > "$$(cat $(VENV60)/.purelib)/sluice-base.pth"
	$(VENV60)/bin/python -m pip install --quiet --disable-pip-version-check "django>=6.0,<6.1"
	@touch $@

test-django60: $(VENV60)/.installed services
	@if [ -z "$${DATABASE_URL:-}" ] && timeout 2 bash -c '>/dev/tcp/127.0.0.1/5432' 2>/dev/null; then \
	    export DATABASE_URL=$(LOCAL_PG); fi; \
	$(VENV60)/bin/python -c 'import django; assert django.VERSION[:2] == (6, 0), django.__version__; print("tests on Django", django.__version__)' && \
	$(VENV60)/bin/python -m pytest -q -p no:cacheprovider $(DJANGO_TASKS_TESTS)

# The task peers bench/tasks.py compares with: the `bench` group of pyproject.toml, not a runtime dependency.
$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(PY) -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))' \
	    > $(VENV)/bench-requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/bench-requirements.txt
	@touch $@

bench: install $(VENV)/.bench-installed
	@if [ -z "$${DATABASE_URL:-}" ] && timeout 2 bash -c '>/dev/tcp/127.0.0.1/5432' 2>/dev/null; then \
	    export DATABASE_URL=$(LOCAL_PG); fi; \
	$(PY) bench/run.py $(BENCH_ARGS)

# Stops the embedded PostgreSQL that `make run` started (its data stays in var/pgdata).
stop-db: install
	$(PY) -c "from config import database; database.stop_embedded()"

clean:
	rm -rf $(VENV) $(VENV)-django60 .pytest_cache
