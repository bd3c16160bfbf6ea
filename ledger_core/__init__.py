"""ledger_core: the domain and application of an event-sourced double-entry ledger.

Pure domain and application logic; SQL lives only in `ledger_core.store`. See DESIGN.md.
"""

from ledger_core.ledger import Ledger

__all__ = ["Ledger"]
