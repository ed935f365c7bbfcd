"""``python -m gnp.main``: see ``gnp.main.main``."""

from gnp.main.main import run

run()
