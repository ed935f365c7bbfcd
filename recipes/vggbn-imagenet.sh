#!/usr/bin/env bash
# The released 'vggbn-imagenet' training script: gnp/configs/vggbn_imagenet.py holds its hyper-parameters.
# Override anything with --config.KEY=VALUE after the script's name, e.g.
#   recipes/vggbn-imagenet.sh --config.seeds=1 --config.gnp.alpha=0.6
set -euo pipefail
cd "$(dirname "$0")/.."
WORKING_DIR=${WORKING_DIR:-runs/vggbn-imagenet}
PYTHON=${PYTHON:-.venv/bin/python}
IMAGENET_DIR=${IMAGENET_DIR:-$HOME/gnp_data/imagenet}  # holds train/ and val/ class folders
exec "$PYTHON" -m gnp.main --config=gnp/configs/vggbn_imagenet.py --working_dir="$WORKING_DIR" \
    --config.imagenet_train_dir="$IMAGENET_DIR/train" \
    --config.imagenet_val_dir="$IMAGENET_DIR/val" "$@"
