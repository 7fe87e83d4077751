# One command sets everything up and runs the main job; one sets everything up and runs the tests.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: quickstart test setup lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	# torch is named in the SAME pip command as everything that depends on it (STACK_NOTES):
	# otherwise pip resolves a multi-GB CUDA build on CPU-only machines.
	$(BIN)/pip install --quiet -c constraints.txt "torch==2.13.0" -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

quickstart: $(STAMP)
	$(BIN)/glamhpc train configs/quickstart.yaml

test: $(STAMP)
	$(BIN)/ruff check glamhpc tests benchmarks
	$(BIN)/ruff format --check glamhpc tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check glamhpc tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format glamhpc tests benchmarks
	$(BIN)/ruff check --fix glamhpc tests benchmarks

clean:
	rm -rf $(VENV) runs mlruns mlflow.db .pytest_cache
