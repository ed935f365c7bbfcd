#!/usr/bin/env bash
# The released 'wideresnet-cifar' training script: gnp/configs/wideresnet_cifar.py holds its hyper-parameters.
# Override anything with --config.KEY=VALUE after the script's name, e.g.
#   recipes/wideresnet-cifar.sh --config.seeds=1 --config.gnp.alpha=0.6
set -euo pipefail
cd "$(dirname "$0")/.."
WORKING_DIR=${WORKING_DIR:-runs/wideresnet-cifar}
PYTHON=${PYTHON:-.venv/bin/python}
DATA_DIR=${DATA_DIR:-$HOME/gnp_data}  # holds cifar-10-python.tar.gz (or its folder): docs/data.md
exec "$PYTHON" -m gnp.main --config=gnp/configs/wideresnet_cifar.py --working_dir="$WORKING_DIR" \
    --config.dataset.data_dir="$DATA_DIR" "$@"
