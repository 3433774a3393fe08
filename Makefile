# Two commands (README): `make book` builds the executed book, `make test` runs the three test suites.
# Each creates .venv with the pinned, tested set-up (constraints) if it is missing.
VENV   ?= .venv
PYTHON ?= python3
BIN     = $(VENV)/bin

.PHONY: book test demo bench clean lab

$(BIN)/.installed: pyproject.toml constraints
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints -e ".[test,book,bench]"
	# the third-party packages whose conformance parity_tests/adapters/ checks (no dependencies pulled: no torch)
	$(BIN)/python -m pip install --no-deps s5-pytorch==0.2.1 accelerated-scan==0.3.1 recurrentgemma==1.0.1 \
		mambapy==1.2.0 einops==0.8.1 jaxtyping==0.2.36
	touch $@

book: $(BIN)/.installed
	PYTHONPATH=$(CURDIR) $(BIN)/jupyter-book build book --all -W -n --keep-going
	@echo "The book is at book/_build/html/index.html"

test: $(BIN)/.installed
	$(BIN)/pytest parity_tests reference_tests torch_tests

demo: $(BIN)/.installed
	$(BIN)/python -m reference.demo

# The book's pages as notebooks that run from this clone (outputs empty; open them with any Jupyter).
lab: $(BIN)/.installed
	$(BIN)/python book/_notebooks.py book/_build/notebooks
	@echo "Open the notebooks in book/_build/notebooks with Jupyter, e.g. $(BIN)/pip install jupyterlab && $(BIN)/jupyter lab book/_build/notebooks"

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.scan --quick

clean:
	rm -rf $(VENV) book/_build .hypothesis .pytest_cache
