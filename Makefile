# Two commands do everything on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO   := demo

.PHONY: venv demo test stress lint format tools bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "Creating $(VENV) and installing ccdcal with its dependencies (numpy, astropy, ccdproc, numba,"
	@echo "SQLAlchemy, psycopg, Dask, pytest ...): a few minutes, once."
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[postgres,dask,test]'
	touch $(STAMP)

# fitsverify (HEASARC, Debian package) checks every FITS file ccdcal writes; headless Chromium (Debian
# package chromium) opens the HTML report and checks that its images render.
# Installed when missing and possible; the tests that need them skip with the reason otherwise.
tools:
	@command -v fitsverify >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fitsverify) >/dev/null \
	      || echo "warning: could not install fitsverify; its tests will skip"; \
	  else echo "note: fitsverify not installed (apt-get install fitsverify); its tests will skip"; fi; }
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
	      || echo "warning: could not install chromium; the report's browser test will skip"; \
	  else echo "note: chromium not installed (apt-get install chromium); the report's browser test will skip"; fi; }

# The raw night simulated by an earlier `make demo` is kept (the catalog then finds nothing new, and process
# nothing to do); `make demo FRESH=1` starts again from an empty demo/.
demo: $(STAMP)
	@if [ -n "$(FRESH)" ]; then echo "FRESH=1: removing $(DEMO)/"; rm -rf $(DEMO); fi
	@if [ -d $(DEMO)/raw ]; then echo "Keeping the raw night in $(DEMO)/raw (make demo FRESH=1 simulates it again)"; \
	  else echo "Simulating a raw night in $(DEMO)/raw"; $(BIN)/ccdcal simulate $(DEMO)/raw --seed 1; fi
	cd $(DEMO) && ../$(BIN)/ccdcal --db ccdcal.db ingest raw
	cd $(DEMO) && ../$(BIN)/ccdcal --db ccdcal.db process --masters-dir masters --output-dir calibrated
	cd $(DEMO) && ../$(BIN)/ccdcal --db ccdcal.db status
	cd $(DEMO) && ../$(BIN)/ccdcal --db ccdcal.db report -o report.html
	@echo
	@echo "Raw night:  $(CURDIR)/$(DEMO)/raw"
	@echo "Masters:    $(CURDIR)/$(DEMO)/masters"
	@echo "Calibrated: $(CURDIR)/$(DEMO)/calibrated"
	@echo "Report:     $(CURDIR)/$(DEMO)/report.html   (open it in a browser)"
	@echo "Catalog:    $(CURDIR)/$(DEMO)/ccdcal.db   (try: sqlite3 $(DEMO)/ccdcal.db 'select imagetyp, count(*) from frames group by 1')"

lint: $(STAMP)
	$(BIN)/ruff check ccdcal tests benchmarks migrations
	$(BIN)/ruff format --check ccdcal tests benchmarks migrations
	$(BIN)/mypy
	$(BIN)/lint-imports  # the layers of docs/design.md (contracts in pyproject.toml)

format: $(STAMP)
	$(BIN)/ruff format ccdcal tests benchmarks migrations
	$(BIN)/ruff check --fix ccdcal tests benchmarks migrations

test: $(STAMP) tools lint
	$(BIN)/python -m pytest

# Hundreds of Ctrl-C (SIGINT) and SIGTERM at random moments of ingest, masters, process and run, on SQLite and
# PostgreSQL (tests/robustness/test_random_interrupts.py, marker stress, which `make test` leaves out); ends
# with a table of the outcomes and exit times. `make stress STRESS_TRIES=1000 STRESS_SEED=7` for others.
STRESS_TRIES ?= 300
STRESS_SEED  ?= 1
stress: $(STAMP)
	STRESS_TRIES=$(STRESS_TRIES) STRESS_SEED=$(STRESS_SEED) $(BIN)/python -m pytest -m stress tests/robustness/test_random_interrupts.py

# Siril (Debian package siril, siril-cli), the C tool the benchmarks compare with; installed when missing and
# possible, as fitsverify is for the tests (the benchmarks print "not installed" and no ratio otherwise).
bench: $(STAMP)
	@command -v siril-cli >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq siril) >/dev/null \
	      || echo "warning: could not install siril; the benchmarks give no Siril ratio"; \
	  else echo "note: siril not installed (apt-get install siril); the benchmarks give no Siril ratio"; fi; }
	$(BIN)/python benchmarks/bench_ingest.py
	$(BIN)/python benchmarks/bench_masters.py
	$(BIN)/python benchmarks/bench_night.py

clean:
	rm -rf $(VENV) $(DEMO) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
