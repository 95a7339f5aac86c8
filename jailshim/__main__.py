"""``python -m jailshim``: the same entry point as the `jailshim` command (jailshim.entry)."""

from __future__ import annotations

import sys

from jailshim.entry import main

if __name__ == "__main__":
    sys.exit(main())
