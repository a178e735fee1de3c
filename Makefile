# The two commands a new user needs are `make run` and `make test`; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# One stamp per set of extras: `make run` installs only what running needs; the test
# and bench targets add their tools on top (pip keeps what is already there).
RUN_STAMP   := $(VENV)/.run-stamp
TEST_STAMP  := $(VENV)/.test-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
LOADTEST_STAMP := $(VENV)/.loadtest-stamp
# Debian packages the tests and benchmarks drive for real, as PACKAGE:COMMAND pairs
# (installed when the command is missing and we are root).
TEST_PACKAGES  := redis-server:redis-server redis-tools:redis-cli chromium:chromium nginx-light:nginx curl:curl
BENCH_PACKAGES := redis-server:redis-server wrk:wrk

.PHONY: run test lint bench bench-memory bench-profile fuzz-api loadtest clean system-packages-test system-packages-bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

# The tests run a short load test too (tests/test_loadtest_smoke.py): locust comes along.
$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,loadtest]'
	touch $@

$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

$(LOADTEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,loadtest]'
	touch $@

run: $(RUN_STAMP)
	RISKGATE_SECRET="$${RISKGATE_SECRET:-demo-only-secret-do-not-deploy}" \
	RISKGATE_ADMIN_TOKEN="$${RISKGATE_ADMIN_TOKEN:-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(24))')}" \
	$(BIN)/riskgate demo

# Installs the Debian packages whose command is missing: as root with apt-get,
# otherwise it prints the one line to run and stops.
define need_packages
	@missing=""; for pair in $(1); do \
	  command -v $${pair#*:} >/dev/null 2>&1 || missing="$$missing $${pair%%:*}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing from Debian"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing:$$missing -- run: sudo apt-get install -y$$missing"; exit 1; \
	  fi; \
	fi
endef

system-packages-test:
	$(call need_packages,$(TEST_PACKAGES))

system-packages-bench:
	$(call need_packages,$(BENCH_PACKAGES))

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests bench loadtest
	$(BIN)/mypy

test: $(TEST_STAMP) system-packages-test lint
	$(BIN)/python -m pytest
	$(BIN)/riskgate rules check rules
	$(BIN)/riskgate rules test rules

bench: $(BENCH_STAMP) system-packages-bench
	$(BIN)/python bench/run.py

# A million addresses through a real Redis: some minutes, so apart from `make bench`.
bench-memory: $(BENCH_STAMP) system-packages-bench
	$(BIN)/python bench/memory_bench.py

# Where a decision's CPU goes: py-spy on `riskgate serve` under the bench's load.
bench-profile: $(BENCH_STAMP) system-packages-bench
	$(BIN)/python bench/profile.py

# The schemathesis run of /openapi.json at any size (make test runs 2,000+ cases of it):
# make fuzz-api EXAMPLES=5000
EXAMPLES ?= 2000
fuzz-api: $(TEST_STAMP) system-packages-test
	$(BIN)/python bench/openapi_fuzz.py --examples $(EXAMPLES)

# Humans and bots through `riskgate serve` (Redis) in front of the demo airline, headless,
# for DURATION seconds with SEED; the table and the last line are printed, locust's CSV
# and HTML report written to loadtest/out/.
SEED     ?= 1
DURATION ?= 240
MODEL    ?=
loadtest: $(LOADTEST_STAMP) system-packages-bench
	$(BIN)/python loadtest/run.py --seed $(SEED) --duration $(DURATION) $(if $(MODEL),--model)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
