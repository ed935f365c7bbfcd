"""Config files, one per recipe; each ``get_config()`` starts from ``base.get_base_config()``."""
