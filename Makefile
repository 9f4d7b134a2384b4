# anyjob: `make run` starts everything, `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt container/requirements.txt | sha256sum | cut -c1-12)

.PHONY: run test lint unit sysdeps bench clean

$(STAMP): requirements.txt container/requirements.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "anyjob needs Python 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==26.3
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	# The dashboard renders command lines with the container's own code: make it importable.
	$(BIN)/python -c 'import pathlib, sys, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "anyjob-container.pth").write_text(sys.argv[1] + "\n")' "$(CURDIR)/container"
	rm -f $(VENV)/.installed-* && touch $@

# Debian packages the tests and benchmarks use (installed when missing and we are root).
sysdeps:
	@bash .ci/sysdeps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The PostgreSQL pass: the suite's tests that touch the database, again on a real PostgreSQL
# server the tests start (tests/postgres.py). Left out: the modules with no database (the
# container, the launcher, start-up errors, bundles, requests, the image environment) and the
# browser tests and the real clients' tests (their stack keeps its own SQLite file, as `make run`
# does: a second pass would take minutes and test nothing new).
POSTGRES_SKIP := tests/container tests/browser tests/test_make_run.py tests/test_launcher.py \
	tests/test_start_errors.py tests/test_bundles.py tests/test_requests.py tests/local/test_image.py \
	tests/clients

# Run once, on SQLite: seeding 100,000 jobs costs 100 s more on PostgreSQL, whose plans for the
# same pages `bench/dashboard.py --database both` measures at that size.
POSTGRES_DESELECT := tests/test_history_metrics.py::test_at_100000_seeded_jobs_the_metric_pages_keep_their_queries_and_indexes

# Three passes at once, each mostly waiting on the jobs, servers and browsers it starts (one
# pass kept one of the two cores busy): the suite on SQLite (its output here), the suite's
# database tests again on PostgreSQL, and the real clients' tests (tests/clients, mostly the
# SDKs' own 30 s polling). The other two write test-output/postgres-run.log and
# test-output/clients-run.log, printed when all three end; any failing fails the target.
test: $(STAMP) sysdeps lint
	@mkdir -p test-output; \
	$(BIN)/python -m pytest -p no:cacheprovider tests/clients > test-output/clients-run.log 2>&1 & clients=$$!; \
	postgres_pid=; \
	if $(BIN)/python -m tests.postgres; then \
	  echo "--- on PostgreSQL meanwhile (ANYJOB_TEST_DB=postgres): tests/ but $(POSTGRES_SKIP): test-output/postgres-run.log"; \
	  ANYJOB_TEST_DB=postgres $(BIN)/python -m pytest -p no:cacheprovider \
	    $(addprefix --ignore=,$(POSTGRES_SKIP)) $(addprefix --deselect=,$(POSTGRES_DESELECT)) \
	    > test-output/postgres-run.log 2>&1 & postgres_pid=$$!; \
	fi; \
	echo "--- tests/clients meanwhile: test-output/clients-run.log"; \
	$(BIN)/python -m pytest --ignore=tests/clients; main=$$?; \
	postgres=0; \
	if [ -n "$$postgres_pid" ]; then \
	  wait $$postgres_pid || postgres=$$?; \
	  echo "--- the PostgreSQL pass:"; cat test-output/postgres-run.log; \
	fi; \
	wait $$clients; status=$$?; \
	echo "--- the real clients (tests/clients), on SQLite:"; cat test-output/clients-run.log; \
	echo "--- make test: SQLite pass $$main, PostgreSQL pass $$postgres, real clients $$status (0 is a pass)"; \
	[ $$main -eq 0 ] && [ $$status -eq 0 ] && [ $$postgres -eq 0 ]

bench: $(STAMP) sysdeps
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/serve_throughput.py
	$(BIN)/python bench/local_job_overhead.py
	$(BIN)/python bench/submit_to_complete.py
	$(BIN)/python bench/poll_cost.py
	$(BIN)/python bench/upload.py
	$(BIN)/python bench/invoke_latency.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/metrics.py
	$(BIN)/python bench/team_load.py
	$(BIN)/python bench/api_first_line.py
	$(BIN)/python bench/aws_api.py

# Embedded Redis, one Celery worker + beat and the web server on 127.0.0.1:8000 (webapp/run.py).
run: $(STAMP)
	@bash .ci/sysdeps.sh runtime
	$(BIN)/python -m webapp.run

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
