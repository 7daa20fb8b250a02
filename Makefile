# Quick start: `make demo` then `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_MODELS := models/demo/MANIFEST.json
export HF_HUB_OFFLINE := 1

.PHONY: demo test bench lint clean system-deps

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,c2pa]'
	touch $(INSTALLED)

# Rebuilt (same seed, same bytes) when the code that builds them changes.
$(DEMO_MODELS): $(INSTALLED) renderer/demo_models.py renderer/ldm_layout.py
	$(BIN)/campaign demo-models --dir models/demo --force

demo: $(DEMO_MODELS)
	$(BIN)/campaign render campaigns/demo.yaml --out outputs

# Headless Chromium (report browser test) and exiftool (metadata tests), from Debian.
system-deps:
	@command -v chromium >/dev/null && command -v exiftool >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends \
	    chromium libimage-exiftool-perl >/dev/null) || \
	  echo "warning: chromium/exiftool not installed; their tests will be skipped"

test: $(DEMO_MODELS) system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

bench: $(DEMO_MODELS)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/ray_bench.py
	$(BIN)/python bench/ledger_bench.py
	$(BIN)/python bench/upscale_bench.py

lint: $(INSTALLED)
	$(BIN)/ruff check .

clean:
	rm -rf outputs .pytest_cache
