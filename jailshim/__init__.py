"""jailshim: start chrooted daemons safely.

Kept empty of imports on purpose: every command pays for what this module imports.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
