# Two commands do all the set-up: `make run` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test test-quick check clean dask-local

$(BIN)/.installed: pyproject.toml setup.py core/_scan.c core/_tally.c core/_count.c core/arrow.h core/column.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/runpipeline

# The same run on a Dask cluster of this machine: `dask scheduler` and two `dask worker` processes.
dask-local: $(BIN)/.installed
	BIN=$(BIN) bench/dask_local.sh

check: $(BIN)/.installed
	$(BIN)/runpipeline --check

# Two pytest workers, each test file on one of them (its module fixtures built once): many tests
# wait on watchers, subprocesses and signals, so two workers halve the wall time even on 2 CPUs.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# The fast part, for the edit-test loop: leaves out the tests that generate millions of lines,
# kill watchers at random points, run the suite again on the pure Python path, search inputs
# with hypothesis, or merge detector states over random splits, the end-to-end tests of alerts,
# metrics, config reload, object storage, serving and the report, and the tests marked slow;
# `make test` (what CI runs) has them all.
QUICK_SKIP := test_memory_cap test_watch_load test_fallback test_exactly_once test_degrade test_compare test_traffic \
              test_property test_watch test_generate test_detectors test_alerts test_metrics test_reload test_s3 \
              test_serve test_report test_small_files test_ruletest test_sources test_executor_settings test_runs
test-quick: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m 'not slow' $(foreach t,$(QUICK_SKIP),--ignore=tests/$(t).py)

clean:
	rm -rf $(VENV) output/*.json output/.state
