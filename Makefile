# Two entry points of the README's quick start: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The single-node OpenSearch the search-store tests run against (docs/elasticsearch.md).
OS_DIR   := tools/opensearch
OS_BUILT := $(OS_DIR)/target/classes/feedrank/opensearch/TestNode.class
OS_STATE := $(OS_DIR)/target/run

.PHONY: setup demo test lint bench clean opensearch-build opensearch opensearch-stop chromium

$(BIN)/feedrank: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev,api,neural,spark]'
	touch $(BIN)/feedrank

setup: $(BIN)/feedrank opensearch-build chromium

# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads a browser).
# Without it (no apt, no network) setup goes on and those tests say why they skip.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		(apt-get install -y -q chromium >/dev/null 2>&1 || \
		 (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) || \
		echo "chromium could not be installed with apt-get; the dashboard's browser tests will skip"; \
	fi

# Maven resolves OpenSearch 2.19 and its plugins once (~/.m2 keeps them); no Java or Maven on
# the machine: nothing is built and the server tests say why they skip.
$(OS_BUILT): $(OS_DIR)/pom.xml $(OS_DIR)/src/main/java/feedrank/opensearch/TestNode.java
	mvn -B -q -f $(OS_DIR)/pom.xml process-classes
	touch $@

opensearch-build:
	@if command -v java >/dev/null && command -v mvn >/dev/null; then \
		$(MAKE) --no-print-directory $(OS_BUILT); \
	else \
		echo "java and mvn must be on PATH to build the OpenSearch test node; skipped"; \
	fi

# Starts a node in the background (reused if running); its URL is the last line printed.
opensearch: $(OS_BUILT)
	@$(OS_DIR)/start.sh $(OS_STATE)

opensearch-stop:
	@$(OS_DIR)/stop.sh $(OS_STATE)

demo: setup
	$(BIN)/feedrank --store sqlite:///./demo.db demo

lint: setup
	$(BIN)/ruff check src tests $(wildcard bench) $(wildcard examples)
	$(BIN)/ruff format --check src tests $(wildcard bench) $(wildcard examples)
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -n 2 --dist loadgroup  # loadgroup: the Spark tests share one worker (one JVM)

bench: setup
	for b in bench/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	-$(OS_DIR)/stop.sh $(OS_STATE)
	rm -rf $(VENV) demo.db demo.db-* feedrank_models .pytest_cache .mypy_cache .ruff_cache screenshots
	rm -rf $(OS_DIR)/target
