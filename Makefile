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

## make test: the whole suite, unit and integration (starts its own Kafka broker).
test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
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
