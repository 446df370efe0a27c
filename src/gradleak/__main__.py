"""``python -m gradleak``: the same command line as the ``gradleak`` script."""

from __future__ import annotations

import sys

from gradleak.cli import main

if __name__ == "__main__":
    sys.exit(main())
