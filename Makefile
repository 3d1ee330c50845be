# Two commands on a fresh clone: `make run` and `make test`.
# PYTHON picks the interpreter (default python3; e.g. PYENV_VERSION=3.12.1 make test PYTHON=python3.12).
PYTHON ?= python3
VENV ?= .venv
PYVER := $(shell $(PYTHON) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
CONSTRAINTS := constraints/py$(PYVER).txt
STAMP := $(VENV)/.installed-py$(PYVER)
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test bench venv clean lint

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@if [ -x $(PY) ] && [ "$$($(PY) -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')" != "$(PYVER)" ]; then \
		echo "recreating $(VENV) for Python $(PYVER)"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[test]'
	@rm -f $(VENV)/.installed-py*; touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(PY) -m sim $(ARGS)

# the suite on WORKERS processes (pytest-xdist; a test module stays on one worker, so its fixtures run once)
WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile $(ARGS)

bench: $(STAMP)
	$(PY) bench/run_bench.py $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
