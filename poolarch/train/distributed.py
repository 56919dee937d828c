"""Moved to :mod:`poolarch.distributed`; this alias only serves ``poolarch/search/cli.py`` until the
new CLI package replaces it (delete when merging)."""
from ..distributed import *  # noqa: F401,F403
from ..distributed import is_primary_process  # noqa: F401
