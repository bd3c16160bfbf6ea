"""Event encoding: the ledger's msgspec codec against eventsourcing's stock JSON transcoder.

Issue 2 asks for a msgspec-based encoding only if it measures faster than the stock JSON one,
keeping Decimal, UUID and date exact. This encodes and decodes the same `PostingRecorded` events
(two entries, as the write benchmark posts) both ways, in the same run, and reports the ratio. The
stock path is what eventsourcing's Mapper does: the event's fields as a dict, through
`JSONTranscoder` with its UUID, Decimal and datetime transcodings (plus one for dates, which it
lacks), and back.

    python -m benchmarks.codec_benchmark [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Transcoding,
    UUIDAsHex,
)

from benchmarks.common import format_table, machine_info, utc_timestamp, write_results
from ledger_core import events as ev
from ledger_core.codec import decode_event, encode_event


class DateAsISO(Transcoding):
    type = date
    name = "date_iso"

    def encode(self, obj: date) -> str:
        return obj.isoformat()

    def decode(self, data: str) -> date:
        return date.fromisoformat(data)


class EntryAsList(Transcoding):
    type = ev.EntryRecorded
    name = "entry"

    def encode(self, obj: ev.EntryRecorded) -> list[Any]:
        return [obj.account_id, obj.direction, obj.amount_minor, obj.currency]

    def decode(self, data: list[Any]) -> ev.EntryRecorded:
        return ev.EntryRecorded(*data)


def stock_transcoder() -> JSONTranscoder:
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO(), DateAsISO(), EntryAsList()):
        transcoder.register(transcoding)
    return transcoder


def sample_events(count: int) -> list[ev.PostingRecorded]:
    now = datetime.now(UTC)
    return [
        ev.PostingRecorded(
            posting_id=uuid.uuid4(),
            entries=(
                ev.EntryRecorded(uuid.uuid4(), "debit", 1250 + index, "USD"),
                ev.EntryRecorded(uuid.uuid4(), "credit", 1250 + index, "USD"),
            ),
            effective_date=now.date(),
            description="Groceries",
            merchant="Corner shop",
            metadata={"receipt": f"r-{index}"},
            recorded_at=now,
            idempotency_key=f"key-{index}",
        )
        for index in range(count)
    ]


def time_msgspec(events: list[ev.PostingRecorded]) -> tuple[float, float]:
    started = time.perf_counter()
    stored = [encode_event(event) for event in events]
    encoded = time.perf_counter() - started
    started = time.perf_counter()
    decoded = [decode_event(topic, state) for topic, state in stored]
    assert decoded == events
    return encoded, time.perf_counter() - started


def time_stock(events: list[ev.PostingRecorded], transcoder: JSONTranscoder) -> tuple[float, float]:
    started = time.perf_counter()
    stored = [transcoder.encode(msgspec.structs.asdict(event)) for event in events]
    encoded = time.perf_counter() - started
    started = time.perf_counter()
    decoded = [_posting(transcoder.decode(state)) for state in stored]
    assert decoded == events
    return encoded, time.perf_counter() - started


def _posting(fields: dict[str, Any]) -> ev.PostingRecorded:
    # JSON has no tuple: the entries come back as a list.
    return ev.PostingRecorded(**{**fields, "entries": tuple(fields["entries"])})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    arguments = parser.parse_args()
    events = sample_events(arguments.events)
    transcoder = stock_transcoder()
    msgspec_times = sorted((time_msgspec(events) for _ in range(arguments.rounds)), key=sum)
    stock_times = sorted((time_stock(events, transcoder) for _ in range(arguments.rounds)), key=sum)
    median = arguments.rounds // 2
    per_event = {
        "msgspec": [t / arguments.events * 1e6 for t in msgspec_times[median]],
        "stock_json": [t / arguments.events * 1e6 for t in stock_times[median]],
    }
    rows = [
        [name, encode_us, decode_us, encode_us + decode_us]
        for name, (encode_us, decode_us) in per_event.items()
    ]
    print(format_table(["codec", "encode us/event", "decode us/event", "total us/event"], rows))
    ratio = sum(per_event["stock_json"]) / sum(per_event["msgspec"])
    print(f"msgspec is {ratio:.1f}x faster than the stock JSON transcoder (same run, median)")
    write_results(
        "codec",
        {
            "when": utc_timestamp(),
            "events": arguments.events,
            "us_per_event": per_event,
            "reference": "eventsourcing JSONTranscoder (stock) on the same events",
            "ratio_stock_over_msgspec": ratio,
            "machine": machine_info(with_postgres=False),
        },
    )


if __name__ == "__main__":
    main()
