# Two commands do all the set-up: `make run` and `make test`. Each builds .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test check clean

$(BIN)/.installed: pyproject.toml setup.py core/_scan.c core/_tally.c core/_count.c core/arrow.h core/column.h
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

run: $(BIN)/.installed
	$(BIN)/runpipeline

check: $(BIN)/.installed
	$(BIN)/runpipeline --check

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) output/*.json output/.state
