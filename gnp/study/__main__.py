"""``python -m gnp.study``: the reproduction study's command line (``gnp.study.main``)."""

import sys

from gnp.files import DamagedFile
from gnp.study.main import main

try:
    main(sys.argv[1:])
except DamagedFile as error:  # a torn results file: one line naming it and the fix
    sys.exit(f"error: {error}")
