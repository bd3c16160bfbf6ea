"""The projections' view of the events: light structs decoded straight from the stored JSON.

The command side decodes events into `ledger_core.events` structs with `UUID`, `date` and
`datetime` values. The projections only copy those values into read tables, so they decode the
same JSON into these lighter structs, where ids, dates and times stay the strings the log
stores (canonical: msgspec writes UUIDs lower-case with hyphens, dates as `YYYY-MM-DD`, times as
RFC 3339 in UTC). That skips building a `UUID` object per id, and hashing and printing it again
in Python for every dict key and every row; replay measured about 3x faster for it.

Each light struct names a subset of its event's fields, with the same names and defaults; the
unit tests check that against `ledger_core.events`, so a new event version cannot drift from
its light view unnoticed. A stored event of an older schema version is decoded by the core's
codec (which upcasts it), encoded again at the current version, and decoded from that.
Events of the global stream (assets, tokens) are decoded by the core's codec, which checks
them, and give `None`: no projection reads them.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from ledger_core import events as ev
from ledger_core.codec import decode_event, encode_event


class LightEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """[account_id, direction, amount_minor, currency], as `ledger_core.types.Entry`."""

    account_id: str
    direction: str
    amount_minor: int
    currency: str


class LightEvent(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    recorded_at: str


class SpaceOpened(LightEvent, frozen=True, kw_only=True):
    space_id: str
    name: str
    base_currency: str


class AccountOpened(LightEvent, frozen=True, kw_only=True):
    account_id: str
    name: str
    type: str
    subtype: str
    currency: str
    code: str | None = None
    overdraft_limit_minor: int | None = None
    metadata: dict[str, str] = {}


class AccountUpdated(LightEvent, frozen=True, kw_only=True):
    account_id: str
    name: str | msgspec.UnsetType = msgspec.UNSET
    overdraft_limit_minor: int | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class AccountStatusChanged(LightEvent, frozen=True, kw_only=True):
    account_id: str


class AccountFrozen(AccountStatusChanged, frozen=True, kw_only=True):
    pass


class AccountUnfrozen(AccountStatusChanged, frozen=True, kw_only=True):
    pass


class AccountClosed(AccountStatusChanged, frozen=True, kw_only=True):
    pass


class Posting(LightEvent, frozen=True, kw_only=True):
    posting_id: str
    entries: tuple[LightEntry, ...]
    effective_date: str
    description: str = ""
    merchant: str | None = None
    category_id: str | None = None
    metadata: dict[str, str] = {}
    pending: bool = False
    expires_at: str | None = None
    reverses: str | None = None


class PostingRecorded(Posting, frozen=True, kw_only=True):
    pass


class PostingDeclined(Posting, frozen=True, kw_only=True):
    reason: str


class PendingPostingPosted(LightEvent, frozen=True, kw_only=True):
    posting_id: str
    entries: tuple[LightEntry, ...]


class HoldClosed(LightEvent, frozen=True, kw_only=True):
    posting_id: str


class PendingPostingVoided(HoldClosed, frozen=True, kw_only=True):
    pass


class PendingPostingExpired(HoldClosed, frozen=True, kw_only=True):
    pass


#: Each space event type of the core and its light view.
LIGHT_TYPES: Final[dict[type[ev.Event], type[LightEvent]]] = {
    ev.SpaceOpened: SpaceOpened,
    ev.AccountOpened: AccountOpened,
    ev.AccountUpdated: AccountUpdated,
    ev.AccountFrozen: AccountFrozen,
    ev.AccountUnfrozen: AccountUnfrozen,
    ev.AccountClosed: AccountClosed,
    ev.PostingRecorded: PostingRecorded,
    ev.PostingDeclined: PostingDeclined,
    ev.PendingPostingPosted: PendingPostingPosted,
    ev.PendingPostingVoided: PendingPostingVoided,
    ev.PendingPostingExpired: PendingPostingExpired,
}

_decoders: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    ev.event_topic(full): msgspec.json.Decoder(light) for full, light in LIGHT_TYPES.items()
}


def decode_light(topic: str, state: bytes) -> LightEvent | None:
    """The light view of the event stored under `topic`; None for an event no projection reads
    (a global stream's event). Raises what decoding raises for a corrupt or unknown event."""
    decoder = _decoders.get(topic)
    if decoder is not None:
        light: LightEvent = decoder.decode(state)
        return light
    event = decode_event(topic, state)  # upcasts an older version; raises if unknown
    light_type = LIGHT_TYPES.get(type(event))
    if light_type is None:
        return None
    current_topic, current_state = encode_event(event)
    return _decoders[current_topic].decode(current_state)  # type: ignore[no-any-return]
