# jouled: `make run` starts the daemon on embedded defaults; `make test` runs every gate.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two install levels, each with its own stamp: `run` gets the daemon's dependencies only
# (about a tenth of the dev set), `test` and the other targets add the extras on top.
# pip shows its progress: the first `make run` on a fresh clone spends its time here.
# The stamps follow what the install builds from: the C span scanner is compiled by pip.
BUILT_FROM := pyproject.toml setup.py jouled/ingest/_otlpscan.c jouled/ingest/_roots.c \
              jouled/ingest/_otlpwire.h \
              jouled/attribution/_split.c jouled/attribution/_pending.c \
              jouled/attribution/_proctick.c
CKSUM    := $(shell cat $(BUILT_FROM) | cksum | cut -d' ' -f1)
RUN_STAMP := $(VENV)/.installed-run-$(CKSUM)
STAMP    := $(VENV)/.installed-dev-$(CKSUM)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint typecheck pytest quick bench demo soak system-deps js-deps clean venv

$(RUN_STAMP): $(BUILT_FROM)
	@echo "make run: installing the daemon's dependencies into $(VENV) (make test adds the rest)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -e .
	rm -f $(VENV)/.installed-run-*; touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --disable-pip-version-check -e '.[dev]'
	rm -f $(VENV)/.installed-dev-*; touch $@

venv: $(STAMP)

run: $(RUN_STAMP)
	$(BIN)/jouled run $(ARGS)

# Debian packages the tests use for real: promtool and a Prometheus server, systemd-analyze.
system-deps:
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null \
	    || ! command -v systemd-analyze >/dev/null; then \
	  echo "installing Debian packages: prometheus systemd"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus systemd >/dev/null; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# The OpenTelemetry JS SDK, a real sender in the end-to-end tests (tests/js/package-lock.json).
js-deps:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "installing Debian packages: nodejs npm"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm >/dev/null; \
	fi
	npm ci --prefix tests/js --no-audit --no-fund --loglevel=error

pytest: $(STAMP) system-deps js-deps
	$(BIN)/pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# The fast inner loop: no end-to-end tests.
quick: $(STAMP)
	$(BIN)/pytest -q -m 'not slow' $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# Daemon, example server and the thesis's scenarios together; a table and a PNG at the end.
demo: $(STAMP)
	$(BIN)/jouled demo $(ARGS)

# 30 minutes of spans at 2,000/s and a scrape a second (the suite runs a 2-minute version).
soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
