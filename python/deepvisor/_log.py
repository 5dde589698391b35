"""deepvisor's logging.

Warnings (a function that runs eagerly) go to the `deepvisor` logger. With
DEEPVISOR_LOG=recompiles,guards,fallbacks,decisions,autotune (or `all`), each
event of those kinds is also printed to stderr, one line each with its reason:
recompiles (a guard miss that captures again), guards (the guards of each new
plan), fallbacks (ops that run through ATen inside a plan, calls that run
eagerly), decisions (tensor data deciding Python control flow), autotune (each
kernel configuration chosen by measurement, with every candidate's time;
printed by the C++ runtime, src/runtime/log.h).
"""

import logging
import os
import sys

log = logging.getLogger("deepvisor")

KINDS = ("recompiles", "guards", "fallbacks", "decisions", "autotune")


def _enabled():
    names = {n.strip() for n in os.environ.get("DEEPVISOR_LOG", "").split(",") if n.strip()}
    if "all" in names:
        return set(KINDS)
    return names


def log_event(kind, message):
    """One line for an event of `kind` when DEEPVISOR_LOG asks for it (read at
    each event, so tests and users may set it at any time)."""
    log.debug("deepvisor[%s]: %s", kind, message)
    if kind in _enabled():
        print(f"deepvisor[{kind}]: {message}", file=sys.stderr, flush=True)
