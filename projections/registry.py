"""Every projection of the ledger, by name, in the order they are run and reported."""

from __future__ import annotations

from typing import Final

from projections.balances import BalancesProjection
from projections.base import Projection
from projections.postings import PostingsProjection

PROJECTIONS: Final[dict[str, type[Projection]]] = {
    BalancesProjection.name: BalancesProjection,
    PostingsProjection.name: PostingsProjection,
}


class UnknownProjection(ValueError):
    """A projection name that is not one of `PROJECTIONS`."""


def projection_classes(names: list[str] | None = None) -> list[type[Projection]]:
    """The projections named (all of them for None), in registry order."""
    if names is None:
        return list(PROJECTIONS.values())
    unknown = sorted(set(names) - set(PROJECTIONS))
    if unknown:
        raise UnknownProjection(
            f"unknown projection(s) {', '.join(unknown)}; known: {', '.join(PROJECTIONS)}"
        )
    return [cls for name, cls in PROJECTIONS.items() if name in names]
