"""``python -m gnp.study``: the reproduction study's command line (``gnp.study.main``)."""

import sys

from gnp.study.main import main

main(sys.argv[1:])
