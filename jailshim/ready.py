"""Make the jail ready for the daemon: prepare it, then verify it from inside (`jailshim
prepare`, and `jailshim run` before the hand-over), with the daemon's own checker awaited
before the jail's lock is let go."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jailshim.check import check
from jailshim.verify.probe import start_probe

if TYPE_CHECKING:
    from jailshim.daemons import PendingCheck
    from jailshim.logs import Logger
    from jailshim.spec import Spec
    from jailshim.verify.probe import Probe

__all__ = ["prepare_and_verify"]


def prepare_and_verify(
    spec: Spec,
    log: Logger,
    *,
    then_exec: bool = False,
    config_check: PendingCheck | None = None,
    first: Probe | None = None,
) -> None:
    """`prepare`, then `check` (unless --no-verify or --dry-run), for `prepare` and `run`.

    The first probe child is forked before the prepare modules are even imported, so its
    OpenSSL set-up runs on the other core while this process prepares the jail. ``config_check``
    is the daemon's own checker, started by `run` and still running: its verdict is awaited
    before the jail's lock is let go, and a rejection takes this run's changes back.
    ``first``: the probe `run` forked as soon as the spec was known (verify/probe.start_probe),
    owned from here (collected or cancelled); else it is forked now.
    """
    probe = first if first is not None else start_probe(spec)
    from jailshim.prepare import prepare

    try:
        # The jail stays locked while it is verified, so a concurrent teardown cannot undo it
        # between the check and the hand-over; a stop signal during the check (or the address
        # wait) undoes this run's changes.
        with prepare(spec, log, then_exec=then_exec) as prepared:
            if probe is not None:
                first, probe = probe, None  # check() owns it from here
                check(spec, log, first=first)
            if config_check is not None:
                pending, config_check = config_check, None
                try:
                    pending.finish()
                except BaseException:
                    prepared.rollback()
                    raise
    except BaseException as exc:
        if probe is not None:
            probe.cancel()
        if config_check is not None and not isinstance(exc, KeyboardInterrupt):
            # The run failed first; a rejected config is the more basic news, so say that.
            pending, config_check = config_check, None
            pending.finish()
        raise
    finally:
        if config_check is not None:
            config_check.cancel()
