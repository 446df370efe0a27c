# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup chromium demo test bench clean lock

LOCK := requirements.lock

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	# every other dependency at the exact version of the lock file (the versions the suite was run with)
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $(STAMP)

# Refresh requirements.lock after a change to pyproject.toml's dependencies: `make lock`, then `make test`.
# torch resolves to the CPU wheel where one lies in /opt/wheels (so no CUDA packages enter the lock); the lock
# names it torch==2.13.0, which the CPU and the CUDA builds both satisfy.
lock: $(STAMP)
	echo "torch==2.13.0$$( [ -d /opt/wheels ] && ls /opt/wheels | grep -q '^torch-2.13.0+cpu' && echo +cpu)" > $(VENV)/torch-override.txt
	$(BIN)/uv pip compile pyproject.toml --extra all --extra test --python $(BIN)/python --no-header \
		$$( [ -d /opt/wheels ] && echo --find-links /opt/wheels) --override $(VENV)/torch-override.txt -o $(LOCK)
	sed -i 's/^torch==2.13.0+cpu$$/torch==2.13.0/' $(LOCK)

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
