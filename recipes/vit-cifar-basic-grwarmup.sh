#!/usr/bin/env bash
# The released 'vit-cifar-basic-grwarmup' training script: gnp/configs/vit_cifar_basic_grwarmup.py holds its hyper-parameters.
# Override anything with --config.KEY=VALUE after the script's name, e.g.
#   recipes/vit-cifar-basic-grwarmup.sh --config.seeds=1 --config.gnp.alpha=0.6
set -euo pipefail
cd "$(dirname "$0")/.."
WORKING_DIR=${WORKING_DIR:-runs/vit-cifar-basic-grwarmup}
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-$HOME/gnp_data}  # holds cifar-10-python.tar.gz (or its folder): docs/data.md
exec "$PYTHON" -m gnp.main --config=gnp/configs/vit_cifar_basic_grwarmup.py --working_dir="$WORKING_DIR" \
    --config.dataset.data_dir="$DATA_DIR" "$@"
