# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup chromium demo test bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all,test]"
	touch $(STAMP)

setup: $(STAMP) chromium

# Debian's chromium renders the HTML report in a test (tests/report/test_html.py); we run as root in CI.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "warning: no chromium and no apt-get: the HTML rendering test will be skipped"; fi

demo: $(STAMP)
	$(BIN)/gradleak demo --out out/demo

test: $(STAMP) chromium
	# one worker a core (pytest-xdist); one group a test file, the files that start Ray in one group (tests/conftest.py)
	$(BIN)/python -m pytest -q --numprocesses logical --dist loadgroup

# Every benchmark prints its own table; run one alone with `.venv/bin/python benchmarks/bench_X.py --help`.
bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) out
