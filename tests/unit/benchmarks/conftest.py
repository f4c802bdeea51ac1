"""Make the repository's ``benchmarks`` package importable however pytest is started.

The installed distribution holds only ``meshproxy``; ``python -m pytest`` from the repository root
finds ``benchmarks`` through the working directory, a bare ``pytest`` does not.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[3])
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
