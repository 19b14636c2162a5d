# Two set-up commands: `make demo` and `make test`. Both work on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned in pyproject (torch==2.13.0): that version is a CPU wheel here; anything else
# pulls a multi-GB CUDA build.

.PHONY: demo test venv lint clean bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test,lm]'
	$(BIN)/python scripts/install_models.py
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/quasirl demo --out quasirl-out/demo

test: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadscope

bench: $(VENV)/.installed
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) quasirl-out .pytest_cache
