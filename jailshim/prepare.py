"""`jailshim prepare`: survey the jail, decide, apply, summarise."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from jailshim.apply import apply_plan
from jailshim.jail.mounts import read_mount_table
from jailshim.jail.powers import survey_powers
from jailshim.jail.safepath import Jail
from jailshim.jail.survey import check_ownership, survey
from jailshim.plan import Plan, decide
from jailshim.spec import Spec

__all__ = ["prepare"]


def prepare(spec: Spec, log: Any) -> Plan:
    """Make ``spec.chroot``'s dev/ right; with ``spec.dry_run`` only print the plan."""
    start = time.monotonic()
    with Jail(spec.chroot) as jail:
        dev_fd = jail.open_dir("dev")
        try:
            for warning in check_ownership(jail, dev_fd, allow_writable=spec.allow_writable_jail):
                log.warning("jail.writable", detail=warning)
            table = read_mount_table()
            powers = survey_powers()
            facts = survey(jail, dev_fd, spec.devices, table, powers, sockets=spec.sockets)
            plan = decide(facts, spec.devices, spec.strategy, repair=spec.repair)
            if spec.dry_run:
                sys.stdout.write(plan.render() + "\n")
                log.info("plan", dry_run=True, changes=plan.changes_anything)
                return plan
            applied = apply_plan(jail, dev_fd, plan, powers, log)
            if applied.dev_fd not in (dev_fd, None):
                os.close(applied.dev_fd)
            unchanged = [s.device.name for s in plan.steps if s.device.name not in applied.created]
            log.info(
                "prepared",
                created=applied.created,
                unchanged=unchanged,
                tmpfs=plan.mount_tmpfs,
                elapsed_ms=round((time.monotonic() - start) * 1000, 3),
            )
            return plan
        finally:
            if dev_fd is not None:
                os.close(dev_fd)
