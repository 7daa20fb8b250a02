# Quick start: `make demo` then `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_MODELS := models/demo/MANIFEST.json
export HF_HUB_OFFLINE := 1

.PHONY: demo test check fuzz bench lint format types clean system-deps

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ray,c2pa]'
	touch $(INSTALLED)

# Rebuilt (same seed, same bytes) when the code that builds them changes.
$(DEMO_MODELS): $(INSTALLED) $(wildcard renderer/demo/*.py) renderer/weights/ldm_layout.py
	$(BIN)/campaign demo-models --dir models/demo --force

demo: $(DEMO_MODELS)
	$(BIN)/campaign render campaigns/demo.yaml --out outputs

# What the tests need from Debian: headless Chromium (browser tests), exiftool (metadata),
# the DejaVu fonts (brand font tests), openssl (C2PA test certificates), unshare (a
# read-only output folder) and prlimit (the fuzz test's memory bound on what it runs), both
# util-linux. A test never skips for lack of one: this fails instead.
SYSTEM_TOOLS := chromium exiftool openssl unshare prlimit
SYSTEM_PACKAGES := chromium chromium-driver libimage-exiftool-perl fonts-dejavu-core openssl util-linux
DEJAVU := /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
system-deps:
	@missing=""; for tool in $(SYSTEM_TOOLS); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	[ -f $(DEJAVU) ] || missing="$$missing fonts-dejavu-core"; \
	if [ -n "$$missing" ]; then \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null) || \
	  { echo "error: the tests need$$missing and apt-get could not install them ($(SYSTEM_PACKAGES))"; exit 1; }; \
	fi

# The tests' JavaScript tools (tests/js/package.json, exact versions locked in its
# package-lock.json: c2pa-ts, the C2PA reader independent of c2pa-rs; axe-core, the
# accessibility checker of the review and report pages), under Node.js and npm
# from Debian when either is missing; reinstalled when the lock changes. No install scripts:
# the tools are plain JavaScript (cbor-x's optional native speed-up is left out).
JS_TOOLS := tests/js/node_modules/.package-lock.json
$(JS_TOOLS): tests/js/package.json tests/js/package-lock.json
	@command -v node >/dev/null && command -v npm >/dev/null || \
	  (apt-get update -qq && apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null) || \
	  { echo "error: the tests need node and npm and apt-get could not install them (nodejs npm)"; exit 1; }
	npm ci --prefix tests/js --ignore-scripts --no-audit --no-fund

# One test process per core (pytest-xdist), a test file's tests in the same process so
# its module fixtures are built once.
TEST_WORKERS ?= $(shell nproc)
test: $(DEMO_MODELS) system-deps $(JS_TOOLS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# The inner loop (under 2 minutes): lint, format, types and the tests that render nothing (the
# input checks, the layering, the output folder, the ledger and the variant spec).
CHECK_TESTS := tests/test_validate_complete.py tests/test_bad_corpus.py tests/test_bad_input.py \
	tests/test_hostile_input.py tests/test_template_limits.py tests/test_output_folder.py \
	tests/test_variant_spec.py tests/test_plan_properties.py tests/test_ledger.py
check: $(DEMO_MODELS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(CHECK_TESTS)

# `make test` fuzzes the inputs with 40 fixed cases (tests/test_fuzz_inputs.py); this runs
# FUZZ_EXAMPLES new ones from a random seed (printed; FUZZ_SEED=N replays a run), renders up
# to FUZZ_RENDERS of those that validate, and saves each new failure in tests/fuzz_corpus/.
FUZZ_EXAMPLES ?= 500
FUZZ_RENDERS ?= 60
FUZZ_SEED ?= random
fuzz: $(DEMO_MODELS)
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) FUZZ_RENDERS=$(FUZZ_RENDERS) FUZZ_SEED=$(FUZZ_SEED) \
	  FUZZ_SAVE=1 $(BIN)/python -m pytest -q -s tests/test_fuzz_inputs.py::test_fuzz_inputs

bench: $(DEMO_MODELS)
	$(BIN)/python bench/run.py
	$(BIN)/python bench/plan_bench.py
	$(BIN)/python bench/ray_bench.py
	$(BIN)/python bench/ledger_bench.py
	$(BIN)/python bench/validate_bench.py
	$(BIN)/python bench/startup_bench.py
	$(BIN)/python bench/review_bench.py
	$(BIN)/python bench/train_bench.py
	$(BIN)/python bench/upscale_bench.py
	$(BIN)/python bench/recipe_axis_bench.py
	$(BIN)/python bench/overlap_bench.py
	$(BIN)/python bench/postprocess_bench.py
	$(BIN)/python bench/storage_bench.py
	$(BIN)/python bench/service_bench.py

lint: $(INSTALLED)
	$(BIN)/ruff check .

format: $(INSTALLED)
	$(BIN)/ruff format .

# The type checker at the strictness pyproject.toml's [tool.mypy] sets (README, "Type checking").
types: $(INSTALLED)
	$(BIN)/mypy

clean:
	rm -rf outputs .pytest_cache .mypy_cache
