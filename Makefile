# Quick start: `make demo` then `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_MODELS := models/demo/MANIFEST.json
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench lint clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

$(DEMO_MODELS): $(INSTALLED)
	$(BIN)/campaign demo-models --dir models/demo

demo: $(DEMO_MODELS)
	$(BIN)/campaign render campaigns/demo.yaml --out outputs

test: $(DEMO_MODELS)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(DEMO_MODELS)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/plan_bench.py

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf outputs .pytest_cache
