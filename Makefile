# The doorway: `make book` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
RUN    ?= runs/mini/subj01

.PHONY: env book check-book chain test bench bench-report lint clean student-copy

env: $(STAMP)  ## a venv from the pinned requirements (once; again when they change)

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

book: env  ## run the chapters on mini-NSD (subject 1, mini models), then build _build/html
	$(PY) -m nsdlib run --dataset mini --subject 1
	$(PY) -m nsdlib book --run $(RUN)

check-book: env  ## every built page in headless Chromium, offline (after `make book`; Debian: apt-get install chromium)
	$(PY) -m nsdlib.bookcheck _build/html

test: env  ## the pytest suite: unit, mini-NSD integration, notebook smoke runs
	$(PY) -m pytest -q

STUDENT ?= student
student-copy: env  ## the book without solutions, for a class: STUDENT=<folder> (default ./student)
	$(PY) -m nsdlib teach student-copy $(STUDENT)

bench: env  ## speed and memory benchmarks (benchmarks/README.md), then RESULTS.md's tables from their JSON
	@set -e; for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f; done
	$(PY) benchmarks/report.py

bench-report: env  ## RESULTS.md's measured tables, regenerated from benchmarks/results/*.json
	$(PY) benchmarks/report.py

lint: env
	$(PY) -m ruff check nsdlib tests benchmarks

clean:  ## generated things only: the built book, executed notebooks, artifacts, caches
	rm -rf _build runs work .pytest_cache .ruff_cache
