"""ledger_core: the domain and application of an event-sourced double-entry ledger.

Pure domain and application logic; SQL lives only in `ledger_core.store`. See DESIGN.md.

`Ledger` is imported on first use (PEP 562), so importing a submodule (`ledger_core.events`,
the codec) does not load the application, its settings and the store's drivers: a projection
builder process, which needs only the events, starts in a fraction of the time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger_core.ledger import Ledger

__all__ = ["Ledger"]


def __getattr__(name: str) -> Any:
    if name == "Ledger":
        from ledger_core.ledger import Ledger

        return Ledger
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
