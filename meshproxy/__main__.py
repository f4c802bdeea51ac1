"""``python -m meshproxy`` is the ``meshproxy`` command."""

from __future__ import annotations

import sys

from meshproxy.cli import main

sys.exit(main())
