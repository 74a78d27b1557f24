# terraseg: the two entry points are `make demo` (main job on real data) and `make test`.
# Each creates .venv and installs what is missing (torch pinned by constraints.txt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
# the data root: $$TERRASEG_DATA when set, else ../shared/datasets when it exists, else the user's data folder
# (terraseg.settings.data_root; `terraseg download --where` prints it, read when a recipe runs so that
# `make demo TERRASEG_DATA=...` counts too); `make data` fetches the public data sets the demo and the tutorials read
# the data sets the demo (massachusetts-buildings) and the tutorials read
DATASETS := massachusetts-buildings new-brunswick-landcover spacenet-clips sen1floods11 landsat magnetic-tiles intel-scenes
RUN := runs/massachusetts-buildings

.PHONY: install data browser demo test lint site docs tutorials bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	npm ci --no-audit --no-fund --silent   # Leaflet for the web page, playwright-core (from the npm registry)
	touch $(STAMP)

install: $(STAMP)

# each data set from its public source (checksums verified) unless it is already under the data root
data: $(STAMP)
	@for d in $(DATASETS); do $(BIN)/terraseg download $$d || exit 1; done

demo: $(STAMP)
	$(BIN)/terraseg download massachusetts-buildings
	$(BIN)/terraseg train configs/massachusetts-buildings.yaml --set output_dir=$(RUN)
	$(BIN)/terraseg evaluate $(RUN)/model.terraseg configs/massachusetts-buildings.yaml --out $(RUN)/test
	$(BIN)/terraseg predict $(RUN)/model.terraseg "$$($(BIN)/terraseg download --where)/massachusetts-buildings/23429155_15.tif" --out $(RUN)/predictions --overlay --probabilities

# Debian's chromium for the browser test and the serving tutorial's screenshot: installed only when run as root
# (CI); elsewhere the test finds a Chromium of its own (TERRASEG_CHROMIUM, chromium, chromium-browser, google-chrome)
# or is skipped with one line
browser:
	@command -v chromium >/dev/null || [ "$$(id -u)" != 0 ] || (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "chromium not installed: the browser test will be skipped"

# two workers (pytest-xdist) for the tests a core each suffices for, then alone on the CPU the few whose check depends on
# a wall budget (marker `serial`)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not serial" --durations=15
	$(BIN)/python -m pytest -q -m serial --durations=5 $$(grep -l 'mark.serial' tests/*.py)

# lint, format and types (settings in pyproject.toml; .pre-commit-config.yaml runs the same before each commit)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# the documentation site: the CLI reference generated from the Typer app, then mkdocs build --strict into site/
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[docs]'
	touch $(DOCS_STAMP)

# the tutorials' commands, run on real data with a one-minute training budget (TUTORIAL_MINUTES): the pages show what
# they print and draw
TUTORIAL_MINUTES ?= 1
tutorials: $(STAMP) data
	$(BIN)/python docs/tutorials/run.py --minutes $(TUTORIAL_MINUTES)

# the site alone, from the committed tutorial outputs (what the pages workflow publishes)
site: $(DOCS_STAMP)
	$(BIN)/typer terraseg.cli.main utils docs --name terraseg --title "CLI reference" --output docs/reference/cli.md
	$(BIN)/python -c 'import pathlib, terraseg.config.describe as d; pathlib.Path("docs/reference/config.md").write_text(d.reference_markdown())'
	$(BIN)/python -c 'import pathlib, terraseg.prepare.download as d; pathlib.Path("docs/data.md").write_text(d.datasets_markdown())'
	$(BIN)/python docs/reference/api.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

docs: tutorials site

clean:
	rm -rf runs site .pytest_cache
