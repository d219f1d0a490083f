# Everything runs inside .venv; `make install` builds it once and the other targets depend on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

MODEL ?= efficientnet-lite0
DATASET ?=
DATA_DIR ?=
SHOTS ?= 1,5,10
CACHE_DIR ?= embeddings

.DEFAULT_GOAL := help
.PHONY: help install demo extract probe test test-clusters bench lint

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned to the build this machine holds on disk (a looser pin downloads GBs)
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv with the toolkit and its test tools

demo: install ## offline: EfficientNet-Lite0 (bundled weights) over sklearn digits, then few-shot probes; open results/demo/report.html
	$(BIN)/extract run --model efficientnet-lite0 --dataset digits --cache-dir $(CACHE_DIR)
	# the floor a pretrained model must beat: a randomly initialised ResNet (weights built here)
	$(BIN)/extract run --model timm:resnet10t --no-pretrained --dataset digits --cache-dir $(CACHE_DIR)
	$(BIN)/cache ls --cache-dir $(CACHE_DIR)
	$(BIN)/probe run --shots $(SHOTS) --seeds 5 --poolings pooled --cache-dir $(CACHE_DIR) --out results/demo --overwrite
	@echo "open results/demo/report.html ($$(du -h results/demo/report.html | cut -f1))"

extract: install ## embed DATASET (or every configured dataset) with MODEL: make extract MODEL=aimv2 [DATASET=.. DATA_DIR=..]
	$(BIN)/extract run --model $(MODEL) $(if $(DATASET),--dataset $(DATASET)) $(if $(DATA_DIR),--data-dir $(DATA_DIR)) --cache-dir $(CACHE_DIR)

probe: install ## probe every complete store: make probe SHOTS=1,5,10
	$(BIN)/probe run --shots $(SHOTS) --cache-dir $(CACHE_DIR)

test: install ## run the test suite (offline, CPU, a few minutes)
	$(BIN)/pytest

# The services stop whatever happens (trap); MEDPROBE_REQUIRE_CLUSTERS=1 makes a service that is
# not up a failure, never a skip.
test-clusters: install ## as root: start a one-node SLURM and a Dask cluster here (ci/clusters), run tests/clusters, stop them
	@trap 'ci/clusters down' EXIT; ci/clusters up && MEDPROBE_REQUIRE_CLUSTERS=1 $(BIN)/python -m pytest -m cluster -rs tests/clusters

bench: install ## probe-sweep, bootstrap, similarity, extraction and shard-join benchmarks; figures go to bench/RESULTS.md by hand
	$(BIN)/python -m bench.probe_sweep --jobs -1 --bootstrap 0
	$(BIN)/python -m bench.bootstrap
	$(BIN)/python -m bench.similarity
	$(BIN)/python -m bench.extraction
	$(BIN)/python -m bench.shard_join

lint: install ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
