# Two commands set up and run everything on a fresh machine with Python 3.11:
#   make train   create .venv, install the pinned dependencies, train the default config
#   make test    same set-up, then the whole test suite (make test-fast: without slow cases)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-fast cuda benchmark benchmark-gpu clean

# (PYTHONWARNINGS=ignore: setuptools warns about every editable install; this one is intended.)
$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) not found: install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	PYTHONWARNINGS=ignore $(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

train: $(STAMP)
	$(PY) -m gnp.main --config=gnp/configs/default.py --working_dir=runs/default

test: $(STAMP)
	$(PY) -m ruff check gnp tests benchmarks
	$(PY) -m ruff format --check gnp tests benchmarks
	$(PY) -m pytest

# The suite without the end-to-end cases marked slow: for a quick check while developing.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# NVIDIA GPUs: the CUDA plugin of the pinned jax (CUDA=13 for the CUDA 13 wheels).
CUDA ?= 12
cuda: $(STAMP)
	$(PY) -m pip install --quiet -e ".[cuda$(CUDA)]"
	$(PY) -c "import jax; print('jax sees', jax.devices())"

benchmark: $(STAMP)
	$(PY) benchmarks/gradient_cost.py

# The GPU table of docs/benchmarks.md, after `make cuda`: WRN-28-10 and ViT-S/16 at 32 px, batch
# 128 (their released CIFAR recipes' batch), float32 and bfloat16, plus the PyTorch peer where
# torch is installed. Writes benchmarks/results/step_time-DEVICE-DATE.md.
benchmark-gpu: $(STAMP)
	@$(PY) -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')" || { echo "jax sees no GPU: run 'make cuda' first"; exit 1; }
	$(PY) benchmarks/step_time.py --models WideResNet_28_10,ViT_S16 --dtypes float32,bfloat16 \
		--batch 128 --steps 20 $$($(PY) -c "import torch" 2>/dev/null && echo --torch)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
