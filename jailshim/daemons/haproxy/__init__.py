"""haproxy's adapter (transitional: the whole reading lives in config.py until the split)."""

from jailshim.daemons.haproxy.config import *  # noqa: F403
from jailshim.daemons.haproxy.config import Facts, ParseError, binary_facts
from jailshim.daemons.haproxy.config import __all__ as __all__
