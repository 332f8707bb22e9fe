# Two commands set everything up on a fresh clone:
#   make run    create .venv, install requirements.txt, run one pipeline tick on the sample data
#   make test   create .venv, install requirements-dev.txt, run the tests
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CRON_SCHEDULE ?= */10 * * * *

.PHONY: run test serve crontab bench sample-data check-sample-data reset help

help:
	@echo "make run          one pipeline tick (python fullprocess.py) on the data in sourcedata/"
	@echo "make test         the test suite"
	@echo "make serve        the API under gunicorn (gunicorn.conf.py) where api.url says (127.0.0.1:8000 by default); it prints the address"
	@echo "make crontab      print the crontab line for this checkout"
	@echo "make bench        the ingestion, API, risk-list and history-page benchmarks (the decision ones: bench/README.md)"
	@echo "make sample-data  rewrite the shipped sample data (samples/generate.py)"
	@echo "make check-sample-data  check samples/ and the working copies (sourcedata/, testdata/, config.json) against samples/generate.py: for CI, fails once you put your own data in"
	@echo "make reset        delete pipeline state (ingesteddata, models, deployment, logs, predictions); sourcedata/ and scoringdata/ stay"

$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Every requirements-*.txt: the files requirements-dev.txt includes (-r), so a change to one of them reinstalls.
$(VENV)/.dev: $(wildcard requirements-*.txt) $(VENV)/.runtime
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) fullprocess.py
	@echo "--- last lines of logs/fullprocess.log ---"
	@tail -n 3 logs/fullprocess.log

test: $(VENV)/.dev
	$(PY) -m pytest $(PYTEST_ARGS)

serve: $(VENV)/.runtime
	$(VENV)/bin/gunicorn --config gunicorn.conf.py wsgi:app

crontab:
	@echo "$(CRON_SCHEDULE) cd $(CURDIR) && $(CURDIR)/$(PY) fullprocess.py >> $(CURDIR)/logs/cron.log 2>&1"

bench: $(VENV)/.dev
	$(PY) bench/bench_ingestion.py
	$(PY) bench/bench_api.py
	$(PY) bench/bench_scoring.py
	$(PY) bench/bench_dashboard.py

sample-data: $(VENV)/.runtime
	$(PY) samples/generate.py

# On a clean clone only (CI): sourcedata/, testdata/ and config.json are then still the shipped ones.
check-sample-data: $(VENV)/.runtime
	$(PY) samples/generate.py --check --clean-clone

reset:
	rm -rf ingesteddata/* models/* production_deployment/* logs/* predictions/*
