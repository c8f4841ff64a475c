# The README's commands. Everything runs from a virtualenv in .venv that these targets make.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-unit test-integration lint typecheck bench soak kafka-up kafka-down clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m pip freeze --exclude-editable > $(VENV)/versions.txt
	touch $(STAMP)

## make demo: broker + worker + a burst of synthetic events; prints released aggregates.
demo: $(STAMP)
	$(VENV)/bin/anonstream demo

## The dashboard's browser test needs Debian's chromium (a headless browser, no network).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the dashboard browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

## The alert-rule tests need promtool, from Debian's prometheus package. Only the promtool
## binary is taken from the package (into .venv/bin): installing the package would also start
## a Prometheus server on hosts with systemd.
PROMTOOL := $(VENV)/bin/promtool
$(PROMTOOL): | $(STAMP)
	@if command -v promtool >/dev/null 2>&1; then ln -sf "$$(command -v promtool)" $@; else \
	  echo "fetching Debian's prometheus package for promtool (the alert-rule tests)"; \
	  rm -rf $(VENV)/prometheus-deb && mkdir -p $(VENV)/prometheus-deb && \
	  { [ "$$(id -u)" != 0 ] || apt-get update -qq; } && \
	  (cd $(VENV)/prometheus-deb && apt-get download -qq prometheus) && \
	  dpkg-deb -x $(VENV)/prometheus-deb/prometheus_*.deb $(VENV)/prometheus-deb/root && \
	  cp $(VENV)/prometheus-deb/root/usr/bin/promtool $@ && rm -rf $(VENV)/prometheus-deb; fi
	@$@ --version >/dev/null

## make test: the whole suite, unit and integration (starts its own Kafka broker).
test: $(STAMP) browser $(PROMTOOL)
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP) $(PROMTOOL)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check streams load tests
	$(VENV)/bin/ruff format --check streams load tests

typecheck: $(STAMP)
	$(VENV)/bin/mypy

## make bench: the load benchmark (1,000,000 events by default) on a local broker.
bench: $(STAMP)
	$(VENV)/bin/anonstream bench

kafka-up: $(STAMP)
	$(VENV)/bin/anonstream kafka up

kafka-down: $(STAMP)
	$(VENV)/bin/anonstream kafka down

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
