"""The projections' light view of the events (`projections.feed`) must not drift from the core's
events: same topics, field names, defaults and kinds of values, and the same values after a
round trip through the stored JSON."""

from __future__ import annotations

from datetime import UTC, date, datetime
from uuid import UUID, uuid4

import msgspec
import pytest

from ledger_core import events as ev
from ledger_core.codec import encode_event
from ledger_core.types import Entry
from projections import feed
from projections.base import EventDecodeFailed, FeedRow, decode_row
from projections.db import _copy_line, _copy_text, pg_array, pg_text_array


@pytest.mark.parametrize(("full", "light"), sorted(feed.LIGHT_TYPES.items(), key=str))
def test_each_light_field_is_a_field_of_the_event_with_the_same_default(
    full: type[ev.Event], light: type[feed.LightEvent]
) -> None:
    full_fields = {f.name: f for f in msgspec.structs.fields(full)}
    for field in msgspec.structs.fields(light):
        assert field.name in full_fields, f"{light.__name__}.{field.name} is not on {full}"
        assert field.default == full_fields[field.name].default or (
            field.default_factory is not msgspec.NODEFAULT
        ), field.name
        assert field.required == full_fields[field.name].required, field.name


def test_every_space_event_has_a_light_view() -> None:
    assert set(feed.LIGHT_TYPES) == set(ev.SPACE_EVENT_TYPES)


NOW = datetime(2026, 11, 23, 7, 51, 3, 672033, tzinfo=UTC)


def _row(event: ev.Event, position: int = 7) -> FeedRow:
    topic, state = encode_event(event)
    return (position, str(uuid4()), topic, state)


def test_a_posting_decodes_to_the_same_values_as_text() -> None:
    account, posting, category = uuid4(), uuid4(), uuid4()
    event = ev.PostingRecorded(
        recorded_at=NOW,
        posting_id=posting,
        entries=(Entry(account, "debit", 125, "USD"), Entry(uuid4(), "credit", 125, "USD")),
        effective_date=date(2026, 2, 28),
        description="tab\there",
        category_id=category,
        metadata={"b": "2", "a": "1"},
        pending=True,
        expires_at=datetime(2026, 12, 1, tzinfo=UTC),
    )
    light = decode_row(_row(event)).event
    assert isinstance(light, feed.PostingRecorded)
    assert light.posting_id == str(posting) and light.category_id == str(category)
    assert light.entries[0] == feed.LightEntry(str(account), "debit", 125, "USD")
    assert light.effective_date == "2026-02-28"
    assert datetime.fromisoformat(light.recorded_at) == NOW
    assert datetime.fromisoformat(light.expires_at or "") == datetime(2026, 12, 1, tzinfo=UTC)
    assert light.pending and light.description == "tab\there" and light.metadata == event.metadata


def test_global_events_are_checked_and_skipped() -> None:
    event = ev.AssetRegistered(recorded_at=NOW, code="BTC", exponent=8)
    assert decode_row(_row(event)).event is None


@pytest.mark.parametrize(
    "row",
    [
        (3, str(UUID(int=1)), "PostingRecorded/v1", b"{not json"),
        (3, str(UUID(int=1)), "PostingRecorded/v1", b'{"recorded_at": "x"}'),
        (3, str(UUID(int=1)), "NoSuchEvent/v1", b"{}"),
        (3, str(UUID(int=1)), "PostingRecorded/v9", b"{}"),
    ],
)
def test_a_bad_event_fails_with_its_position(row: FeedRow) -> None:
    with pytest.raises(EventDecodeFailed) as failed:
        decode_row(row)
    assert failed.value.position == 3 and failed.value.topic == row[2]


def test_copy_text_escapes_what_copy_would_misread() -> None:
    assert _copy_text(None) == "\\N"
    assert _copy_text(True) == "t" and _copy_text(False) == "f"
    assert _copy_text("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"
    assert _copy_text(12) == "12"
    assert _copy_line(("x\ty", None, 5, True, "a\\b"), (0, 4)) == "x\\ty\t\\N\t5\tt\ta\\\\b"


def test_array_literals() -> None:
    assert pg_array([1, None, "2026-01-02"]) == "{1,NULL,2026-01-02}"
    assert pg_array([]) == "{}"
    assert pg_text_array(['a"b', "c\\d", None, "x,y"]) == '{"a\\"b","c\\\\d",NULL,"x,y"}'


def test_gc_is_paused_for_a_batch_and_restored_after_nesting() -> None:
    import gc

    from projections.tracking import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # a caller's own disable is kept
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError), gc_paused():
        1 / 0  # noqa: B018
    assert gc.isenabled()
