# Targets match the README's commands.
VENV ?= .venv
PY := $(VENV)/bin/python

$(PY): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -r requirements-dev.txt && touch $(PY)

.PHONY: run test test-fast lint cluster bench
run: $(PY)
	$(PY) main.py
test: $(PY)
	$(PY) -m pytest
test-fast: $(PY)
	$(PY) -m pytest -m "not slow and not cluster"
lint: $(PY)
	$(VENV)/bin/ruff check . && $(VENV)/bin/shellcheck -x bash_files/*.sh bash_files/local_cluster/*.sh .ci/run
cluster:
	bash bash_files/local_cluster/start.sh --self-test
bench: $(PY)
	$(PY) benchmarks/bench_training.py
