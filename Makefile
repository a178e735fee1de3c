# The two commands a new user needs are `make run` and `make test`; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages the tests and benchmarks drive for real, as PACKAGE:COMMAND pairs
# (installed when the command is missing and we are root).
TEST_PACKAGES  := redis-server:redis-server chromium:chromium nginx-light:nginx
BENCH_PACKAGES := redis-server:redis-server wrk:wrk

.PHONY: run test lint bench loadtest clean system-packages-test system-packages-bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,loadtest]'
	touch $@

run: $(STAMP)
	RISKGATE_SECRET="$${RISKGATE_SECRET:-demo-only-secret-do-not-deploy}" $(BIN)/riskgate demo

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

lint: $(STAMP)
	$(BIN)/ruff check src tests bench loadtest
	$(BIN)/mypy

test: $(STAMP) system-packages-test lint
	$(BIN)/python -m pytest
	$(BIN)/riskgate rules check rules
	$(BIN)/riskgate rules test rules

bench: $(STAMP) system-packages-bench
	$(BIN)/python bench/run.py

# Humans and bots through `riskgate serve` (Redis) in front of the demo airline, headless,
# for DURATION seconds with SEED; the table and the last line are printed, locust's CSV
# and HTML report written to loadtest/out/.
SEED     ?= 1
DURATION ?= 240
loadtest: $(STAMP) system-packages-bench
	$(BIN)/python loadtest/run.py --seed $(SEED) --duration $(DURATION)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
