"""What a forked child must not inherit: locks a parent thread may hold, and derived state.

``os.fork()`` copies every lock in the state it had at that instant: one held
by another thread of the parent stays held in the child for good, and the
child's next call through it hangs. Every object of this package that owns a
lock registers itself here; in the child, before any other code runs, its
``after_fork_in_child()`` is called. That method only replaces locks and
resets attributes: no metric calls, as other objects' locks may not be fresh
yet. One handler for all of them, registered when this module is first
imported (by the registry, before any pipeline: the pipeline's own handler,
which records into the registries, runs after this one).
"""

from __future__ import annotations

import os
import weakref
from typing import Protocol, TypeVar


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


_F = TypeVar("_F", bound=ForkAware)

# Weak: registering must not keep an object alive.
_ALIVE: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def reset_after_fork(obj: _F) -> _F:
    """Have ``obj.after_fork_in_child()`` called in every forked child while ``obj`` lives."""
    _ALIVE.add(obj)
    return obj


def _after_fork_in_child() -> None:
    for obj in list(_ALIVE):
        obj.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
