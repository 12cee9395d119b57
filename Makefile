# daamlab: `make run` installs and trains the default run; `make test` installs and runs the tests.
PY ?= .venv/bin/python
PIP = $(PY) -m pip
STAMPS = .make-stamps
export HF_HUB_OFFLINE ?= 1

.PHONY: help install run test test-full lint format bench report clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv .venv

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build on a CPU machine
$(STAMPS)/install: pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$${TORCH_VERSION:-2.13.0}"
	$(PIP) install -q -e ".[dev,launchers]"
	@mkdir -p $(STAMPS) && touch $@

install: $(STAMPS)/install  ## create .venv and install daamlab with its dev tools and sweep launchers

run: install  ## install, then train DAAM on the default modality
	$(PY) train.py

test: install  ## install, then run the fast test suite (what CI runs)
	$(PY) -m pytest -m "not slow" -q

test-full: install  ## every test, slow ones included
	$(PY) -m pytest -q

lint: install  ## ruff
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

RUNS ?= outputs/train/multiruns
report: install  ## paper-layout tables + figures from run dirs: make report RUNS="<run or multirun dirs>"
	$(PY) -m daamlab.report $(RUNS) --out outputs/report

clean:  ## remove run outputs (not the feature cache)
	rm -rf outputs multirun
