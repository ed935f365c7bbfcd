"""The defaults every config file starts from: ``get_base_config()`` (kept at this path for the
config files that import it from here; the keys, their defaults and meaning are in
``gnp/config_keys.py``)."""

from gnp.config_keys import get_base_config

__all__ = ["get_base_config"]
