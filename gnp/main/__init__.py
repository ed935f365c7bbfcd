"""The training command line, a package so that both module names work.

``python -m gnp.main`` (ours, and ``gnp-train``) and ``python -m gnp.main.main``
(the released scripts' spelling) run the same ``gnp.main.main.run``. Nothing is
imported here: ``-m gnp.main.main`` executes that file as ``__main__``, and an
import of it here first would define its absl flags twice.
"""
