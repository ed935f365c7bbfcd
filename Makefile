# Two commands set up and run everything on a fresh machine with Python 3.11:
#   make train   create .venv, install the pinned dependencies, train the default config
#   make test    same set-up, then the test suite without the end-to-end cases marked slow
#                (make test-slow: those; make test-all: both, as CI runs them)
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-slow test-all cuda benchmark benchmark-gpu gpu-check gpu-wheels clean

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
	$(PY) -m pytest -m "not slow"

# The end-to-end cases over ~10 s each (multi-process runs, every model's training steps, the
# GPU check's smoke mode): CI runs them after make test.
test-slow: $(STAMP)
	$(PY) -m pytest -m slow

test-all: test test-slow

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

# The GPU acceptance run (benchmarks/gpu_check.py, under 8 minutes): writes
# benchmarks/results/gpu-check-DEVICE-DATE/. GPU_PYTHON: the device machine's Python 3.12 with
# jax[cuda] already there; the packages it lacks come from .gpu-wheels/ (make gpu-wheels, here).
GPU_PYTHON ?= python3
gpu-check:
	@$(GPU_PYTHON) -c "import jax, sys; sys.exit(jax.default_backend() == 'cpu')" 2>/dev/null || { echo "error: jax sees no GPU here; on a CPU machine run 'python benchmarks/gpu_check.py --smoke'"; exit 1; }
	test ! -d .gpu-wheels || $(GPU_PYTHON) -m pip install --quiet --no-index --find-links .gpu-wheels grain==0.2.18 ml_collections==1.1.0 tensorboardX==2.6.5 mnist1d==0.0.2.post1
	PYTHONPATH=. $(GPU_PYTHON) benchmarks/gpu_check.py

# Run here, with network: the cp312 manylinux wheels gpu-check installs on the device machine.
gpu-wheels:
	$(PY) -m pip download --quiet --dest .gpu-wheels --only-binary=:all: --python-version 3.12 \
		--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
		grain==0.2.18 ml_collections==1.1.0 tensorboardX==2.6.5 mnist1d==0.0.2.post1
	rm -f .gpu-wheels/numpy-* .gpu-wheels/scipy-*  # jax brings them; under the 64 MiB a run carries

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
