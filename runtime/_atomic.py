"""Old private name of :mod:`rnnstream.runtime.atomic`, kept so existing imports keep working.

Import :mod:`rnnstream.runtime.atomic` instead; this module holds no code of its own.
"""

from __future__ import annotations

from .atomic import TEMP_SUFFIX, write_bytes, write_file, write_files

__all__ = ["TEMP_SUFFIX", "write_bytes", "write_file", "write_files"]
