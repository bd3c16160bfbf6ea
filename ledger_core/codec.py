"""Event and record encoding with msgspec, with schema versions and upcasting.

The stored topic of an event is `<EventName>/v<version>`. Reading an event of the current version
decodes straight into its frozen Struct (the fast path); an older version is decoded to a plain
mapping, upcast one version at a time by `events.UPCASTERS`, then converted. msgspec encodes
UUID, date and datetime exactly, and amounts are integers, so nothing is lost in a round trip.
It measured faster than eventsourcing's stock JSON transcoder (see the write benchmark notes).

Sensitive text is sealed on the way in and opened on the way out (`ledger_core.crypto`): the
fields of `SEALED_FIELDS` in events, and a command's stored answer whole. Decoding without the
ledger's cipher (the projections, the audit) leaves sealed text sealed: it is still text of the
same type, so every decoder reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from ledger_core import events as ev
from ledger_core.crypto import CLEAR, Cipher
from ledger_core.events import EVENT_TYPES, UPCASTERS, Event, event_topic
from ledger_core.records import StoredOutcome

_encoder = msgspec.json.Encoder()
_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    event_topic(cls): msgspec.json.Decoder(cls) for cls in EVENT_TYPES.values()
}
_outcome_decoder: msgspec.json.Decoder[StoredOutcome] = msgspec.json.Decoder(StoredOutcome)  # type: ignore[arg-type]
_topics: dict[type[Event], str] = {cls: event_topic(cls) for cls in EVENT_TYPES.values()}


#: How a sealed field holds its text: a text (None and "" are left as they are), or a metadata
#: mapping (its values sealed one by one, its keys clear).
TEXT, METADATA = "text", "metadata"
_POSTING_FIELDS = (("description", TEXT), ("merchant", TEXT), ("metadata", METADATA))
#: The fields of each event that hold sensitive text (DESIGN.md: names, descriptions,
#: merchants, metadata; and the reasons a client gives for a freeze, close or void).
SEALED_FIELDS: dict[type[Event], tuple[tuple[str, str], ...]] = {
    ev.SpaceOpened: (("name", TEXT),),
    ev.AssetRegistered: (("name", TEXT),),
    ev.AccountOpened: (("name", TEXT), ("metadata", METADATA)),
    ev.AccountUpdated: (("name", TEXT), ("metadata", METADATA)),
    ev.PostingRecorded: _POSTING_FIELDS,
    ev.PostingDeclined: _POSTING_FIELDS,
    # A client's free text about why, like a description.
    ev.AccountFrozen: (("reason", TEXT),),
    ev.AccountUnfrozen: (("reason", TEXT),),
    ev.AccountClosed: (("reason", TEXT),),
    ev.PendingPostingVoided: (("reason", TEXT),),
}


class UnknownEventTopic(ValueError):
    """A stored event's topic names no event type this version of the ledger knows."""


def encode_event(event: Event, cipher: Cipher = CLEAR) -> tuple[str, bytes]:
    """(topic, state bytes) of an event, its sensitive text sealed with `cipher`."""
    if cipher.enabled:
        fields = SEALED_FIELDS.get(type(event))
        if fields is not None:
            event = _sealed(event, fields, cipher)
    return _topics[type(event)], _encoder.encode(event)


def _sealed(event: Event, fields: tuple[tuple[str, str], ...], cipher: Cipher) -> Event:
    return _with_texts(event, fields, cipher.seal, cipher.seal_metadata)


def _opened(event: Event, cipher: Cipher) -> Event:
    fields = SEALED_FIELDS.get(type(event))
    if fields is None:
        return event
    return _with_texts(event, fields, cipher.open, cipher.open_metadata)


def _with_texts(
    event: Event,
    fields: tuple[tuple[str, str], ...],
    text: Callable[[str], str],
    metadata: Callable[[dict[str, str]], dict[str, str]],
) -> Event:
    """`event` with `text` (or `metadata`) applied to each of its non-empty `fields`."""
    changes: dict[str, Any] = {}
    for name, kind in fields:
        value = getattr(event, name)
        if value is msgspec.UNSET or value is None or not value:
            continue
        changes[name] = metadata(value) if kind == METADATA else text(value)
    return msgspec.structs.replace(event, **changes) if changes else event


def decode_event(topic: str, state: bytes, cipher: Cipher = CLEAR) -> Event:
    """The event stored under `topic`, upcast to the current schema version if older; its
    sealed text opened with `cipher`, or left sealed without one."""
    event = _decode_event(topic, state)
    return _opened(event, cipher) if cipher.enabled else event


def _decode_event(topic: str, state: bytes) -> Event:
    decoder = _decoders.get(topic)
    if decoder is not None:
        event: Event = decoder.decode(state)
        return event
    name, _, version_text = topic.partition("/v")
    event_type = EVENT_TYPES.get(name)
    if event_type is None or not version_text.isdigit():
        raise UnknownEventTopic(f"no event type for stored topic {topic!r}")
    version = int(version_text)
    if version > event_type.schema_version:
        raise UnknownEventTopic(
            f"stored topic {topic!r} is newer than this ledger's {event_topic(event_type)!r}"
        )
    payload: dict[str, Any] = msgspec.json.decode(state)
    while version < event_type.schema_version:
        upcaster = UPCASTERS.get((name, version))
        if upcaster is None:
            raise UnknownEventTopic(f"no upcaster from {name} v{version} to v{version + 1}")
        upcaster(payload)
        version += 1
    return msgspec.convert(payload, event_type)


def event_to_builtins(event: Event) -> dict[str, Any]:
    """An event as plain JSON-ready values (for the events feed and audit tools)."""
    result: dict[str, Any] = msgspec.to_builtins(event)
    return result


def encode_outcome(outcome: StoredOutcome, cipher: Cipher = CLEAR) -> bytes:
    """A command's answer as stored with its key: sealed whole (it holds names, descriptions
    and metadata)."""
    return cipher.seal_blob(_encoder.encode(outcome))


def decode_outcome(data: bytes, cipher: Cipher = CLEAR) -> StoredOutcome:
    """A stored answer; a batch's is `BatchStored`, which the writer resolves from the log."""
    return _outcome_decoder.decode(cipher.open_blob(data))
