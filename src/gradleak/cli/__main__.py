"""``python -m gradleak.cli``: the ``gradleak`` command line."""

from __future__ import annotations

import sys

from gradleak.cli import main

sys.exit(main())
