# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint clean mutation

# The last step installs the `reference` extra of pyproject.toml beside the venv, in .venv/reference (why: see
# there). Exact pins and --no-deps: only those wheels, torch untouched, so no pip constraint applies to that step.
REFERENCE = $(shell $(PYTHON) -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['reference']))")

$(BIN)/cm: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	PIP_CONSTRAINT=/dev/null $(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(VENV)/reference \
		$(REFERENCE)
	touch $(BIN)/cm

demo: $(BIN)/cm
	$(BIN)/cm demo --out runs/demo

test: $(BIN)/cm
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2  # two workers of one thread each (tests/conftest.py): 1.5x sooner on 2 cores

lint: $(BIN)/cm
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

# Mutation testing of the mathematical core against the fast unit tests ([tool.mutmut] in pyproject.toml). Slow
# (hours on 2 cores), so not part of `make test` or CI; the report is docs/results/mutation/README.md.
mutation: $(BIN)/cm
	$(BIN)/python -m pip install --quiet 'mutmut>=3.8,<4'
	OMP_NUM_THREADS=1 nice -n 10 $(BIN)/mutmut run --max-children 2
	$(BIN)/python docs/results/mutation/summarize.py

clean:
	rm -rf $(VENV) runs
