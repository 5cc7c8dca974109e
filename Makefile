# Set-up and everyday commands. Each target creates (or reuses) the virtual environment .venv.
# TORCH picks the torch build: the default pin is the CPU wheel these machines carry on disk;
# elsewhere any torch >= 2.2 works, e.g. `make test TORCH=torch`.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench pictures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

## run: train the default model on the embedded UCI digits and write a run directory under runs/
run: $(STAMP)
	$(BIN)/vaelab train --dataset digits --epochs 100 --latent-dim 8 --hidden 256 --binarize dynamic

## test: the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest -q

## bench: the benchmarks recorded in BENCHMARKS.md (needs Fashion-MNIST, see README)
bench: $(STAMP)
	$(BIN)/python benchmarks/train_speed.py
	$(BIN)/python benchmarks/classic_quality.py

## pictures: regenerate the README's pictures in docs/images/ from real Fashion-MNIST runs
pictures: $(STAMP)
	$(BIN)/python docs/pictures.py

clean:
	rm -rf $(VENV) runs .pytest_cache
