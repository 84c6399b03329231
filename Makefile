# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-mutations lint bench clean

# The distribution was called `swarm` before it became swarm-locust-ec2: a venv that has the
# old one drops it, or both would own .venv/bin/swarm.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip uninstall -q -y swarm 2>/dev/null || true
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/swarm demo

# ruff (lint and format) and mypy, on the package: configured in pyproject.toml.
lint: $(VENV)/.installed-test
	$(BIN)/ruff check swarm
	$(BIN)/ruff format --check swarm
	$(BIN)/mypy

# Two pytest workers, each in a lab network namespace of its own (tests/run_in_lab.py): most
# tests wait on sshd, Locust and timeouts, not on CPU. `make test XDIST=` runs them in one.
WORKERS ?= 2
XDIST  ?= --dist worksteal --tx $(WORKERS)*popen//python="$(CURDIR)/$(BIN)/python $(CURDIR)/tests/run_in_lab.py --no-wheelhouse -- $(CURDIR)/$(BIN)/python"

# The offline tests need sshd, ip netns and unshare; tests/system-deps.sh installs what is
# missing (as root, with apt). The suite runs inside a network namespace with no route out.
test: lint
	sh tests/system-deps.sh
	$(BIN)/python tests/run_in_lab.py -- $(BIN)/python -m pytest -q --durations=25 $(XDIST) $(PYTEST_ARGS)

# Each deliberate break of tests/mutations.py in a temporary copy of the checkout, with only
# the tests that must catch it (in the lab); fails if any break is missed. docs/testing.md.
test-mutations: $(VENV)/.installed-test
	sh tests/system-deps.sh
	$(BIN)/python tests/mutations.py $(MUTATIONS)

bench: $(VENV)/.installed-test
	sh tests/system-deps.sh bench
	$(BIN)/python tests/run_in_lab.py -- $(BIN)/python bench/bench.py

clean:
	rm -rf $(VENV) results .pytest_cache
