# Targets match the README's commands.
VENV ?= .venv
PY := $(VENV)/bin/python

$(PY): requirements.txt
	python3 -m venv $(VENV) && $(VENV)/bin/pip install -r requirements.txt && touch $(PY)

.PHONY: run test test-fast cluster bench
run: $(PY)
	$(PY) main.py
test: $(PY)
	$(PY) -m pytest
test-fast: $(PY)
	$(PY) -m pytest -m "not slow and not cluster"
cluster:
	bash bash_files/local_cluster/start.sh --self-test
bench: $(PY)
	$(PY) benchmarks/bench_training.py
