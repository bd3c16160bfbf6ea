"""Sealing and opening sensitive text (ledger_core.crypto) and the codec's use of it."""

from __future__ import annotations

import base64
import os
from datetime import UTC, date, datetime
from uuid import uuid4

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger_core import events as ev
from ledger_core.codec import (
    SEALED_FIELDS,
    decode_event,
    decode_outcome,
    encode_event,
    encode_outcome,
)
from ledger_core.crypto import (
    CLEAR,
    KEY_BYTES,
    MAX_KEYS,
    NONCE_BYTES,
    NONCES_PER_DRAW,
    OPENED_TEXT_MEMORY,
    SEAL_PREFIX,
    Cipher,
    EncryptionKeyInvalid,
    EncryptionKeyMissing,
    SealBroken,
    check_store_keys,
    generate_key,
    key_id,
    parse_keys,
)
from ledger_core.records import SpaceRecord
from ledger_core.types import Entry


def _cipher(*settings: str) -> Cipher:
    return Cipher.from_setting(",".join(settings))


@given(st.text(max_size=300))
def test_text_round_trips_and_never_shows_in_clear(text: str) -> None:
    cipher = _cipher(generate_key())
    sealed = cipher.seal(text)
    assert cipher.open(sealed) == text
    if text:
        assert sealed.startswith(SEAL_PREFIX) and cipher.seal(text) != sealed  # fresh nonces
        if len(text) >= 8:  # (a shorter text can turn up in base64 by chance)
            assert text not in sealed
    else:
        assert sealed == ""


def test_metadata_values_are_sealed_and_keys_stay_clear() -> None:
    cipher = _cipher(generate_key())
    sealed = cipher.seal_metadata({"iban": "GB33BUKB20201555555555"})
    assert list(sealed) == ["iban"] and "GB33" not in sealed["iban"]
    assert cipher.open_metadata(sealed) == {"iban": "GB33BUKB20201555555555"}


def test_blobs_round_trip_and_a_blob_without_its_key_is_refused() -> None:
    cipher = _cipher(generate_key())
    sealed = cipher.seal_blob(b'{"name":"secret"}')
    assert b"secret" not in sealed and cipher.open_blob(sealed) == b'{"name":"secret"}'
    assert CLEAR.open_blob(b'{"plain":1}') == b'{"plain":1}'
    with pytest.raises(EncryptionKeyMissing):
        CLEAR.open_blob(sealed)
    with pytest.raises(EncryptionKeyMissing):
        _cipher(generate_key()).open_blob(sealed)


def test_an_altered_value_is_refused_not_answered() -> None:
    cipher = _cipher(generate_key())
    sealed = cipher.seal("Corner shop")
    raw = bytearray(base64.urlsafe_b64decode(sealed[len(SEAL_PREFIX) + 9 :]))
    raw[-1] ^= 1
    altered = sealed[: len(SEAL_PREFIX) + 9] + base64.urlsafe_b64encode(bytes(raw)).decode()
    with pytest.raises(SealBroken):
        cipher.open(altered)
    with pytest.raises(SealBroken):
        cipher.open(sealed[:-4] + "!!!!")
    blob = bytearray(cipher.seal_blob(b"outcome"))
    blob[-1] ^= 1
    with pytest.raises(SealBroken):
        cipher.open_blob(bytes(blob))


def test_opened_texts_are_remembered_up_to_the_limit_and_refusals_never() -> None:
    cipher = _cipher(generate_key())
    sealed = [cipher.seal(f"Account {number}") for number in range(OPENED_TEXT_MEMORY + 1)]
    remembered = cipher._open_sealed
    assert [cipher.open(value) for value in sealed[:-1]] == [
        f"Account {number}" for number in range(OPENED_TEXT_MEMORY)
    ]
    assert remembered.cache_info().currsize == OPENED_TEXT_MEMORY  # at the limit
    assert cipher.open(sealed[0]) == "Account 0"  # remembered: the same text
    assert remembered.cache_info().hits == 1
    assert cipher.open(sealed[-1]) == f"Account {OPENED_TEXT_MEMORY}"  # past it: one dropped
    assert remembered.cache_info().currsize == OPENED_TEXT_MEMORY
    assert cipher.open(sealed[1]) == "Account 1"  # the least recently opened was dropped
    assert remembered.cache_info().hits == 1
    # A value that does not open raises every time; another cipher does not share the memory.
    altered = sealed[0][:-4] + "!!!!"
    for _ in range(2):
        with pytest.raises(SealBroken):
            cipher.open(altered)
    with pytest.raises(EncryptionKeyMissing):
        _cipher(generate_key()).open(sealed[0])


def test_without_keys_nothing_is_sealed_and_nothing_sealed_is_answered() -> None:
    assert not CLEAR.enabled and CLEAR.seal("Rent") == "Rent" and CLEAR.seal_blob(b"x") == b"x"
    assert CLEAR.open("Rent") == "Rent" and CLEAR.open("") == ""
    sealed = _cipher(generate_key()).seal("Rent")
    for cipher in (CLEAR, _cipher(generate_key())):  # no key, or not the one that sealed
        with pytest.raises(EncryptionKeyMissing, match="does not list"):
            cipher.open(sealed)
    with pytest.raises(EncryptionKeyMissing):
        CLEAR.open(f"{SEAL_PREFIX}deadbeef.AAAA")


def test_rotation_the_first_key_seals_every_key_opens() -> None:
    old, new = generate_key(), generate_key()
    sealed_by_old = _cipher(old).seal("Salary")
    rotated = _cipher(new, old)
    assert rotated.open(sealed_by_old) == "Salary"
    sealed_by_new = rotated.seal("Salary")
    assert key_id(parse_keys(new)[0]) in sealed_by_new
    with pytest.raises(EncryptionKeyMissing):  # a process still on the old list refuses
        _cipher(old).open(sealed_by_new)
    assert rotated.key_ids[0] == key_id(parse_keys(new)[0])


def test_key_settings_at_and_past_their_limits() -> None:
    exact = base64.b64encode(b"k" * KEY_BYTES).decode()
    assert parse_keys(exact) == [b"k" * KEY_BYTES]
    assert parse_keys(exact.rstrip("=")) == [b"k" * KEY_BYTES]  # padding optional
    assert len(parse_keys(generate_key())[0]) == KEY_BYTES  # URL-safe alphabet
    for wrong_length in (KEY_BYTES - 1, KEY_BYTES + 1):
        with pytest.raises(EncryptionKeyInvalid, match="not 32 bytes"):
            parse_keys(base64.b64encode(b"k" * wrong_length).decode())
    keys = [generate_key() for _ in range(MAX_KEYS + 1)]
    assert len(parse_keys(",".join(keys[:MAX_KEYS]))) == MAX_KEYS
    with pytest.raises(EncryptionKeyInvalid, match=f"at most {MAX_KEYS}"):
        parse_keys(",".join(keys))
    for bad in ("not base64!", f"{keys[0]},", f"{keys[0]},{keys[0]}", " , "):
        with pytest.raises(EncryptionKeyInvalid):
            parse_keys(bad)


def test_a_store_is_opened_only_with_every_key_that_sealed_in_it() -> None:
    first, second = generate_key(), generate_key()
    first_id, second_id = (key_id(parse_keys(k)[0]) for k in (first, second))
    check_store_keys(CLEAR, set())
    check_store_keys(_cipher(first), {first_id})
    check_store_keys(_cipher(second, first), {first_id, second_id})
    with pytest.raises(EncryptionKeyMissing, match="set LEDGER_ENCRYPTION_KEY"):
        check_store_keys(CLEAR, {first_id})
    with pytest.raises(EncryptionKeyMissing, match=first_id):
        check_store_keys(_cipher(second), {first_id, second_id})


def _posting_event() -> ev.PostingRecorded:
    return ev.PostingRecorded(
        posting_id=uuid4(),
        entries=(
            Entry(account_id=uuid4(), direction="debit", amount_minor=1250, currency="USD"),
            Entry(account_id=uuid4(), direction="credit", amount_minor=1250, currency="USD"),
        ),
        effective_date=date(2026, 11, 20),
        description="Groceries",
        merchant="Corner shop",
        metadata={"receipt": "r-17"},
        recorded_at=datetime(2026, 11, 20, tzinfo=UTC),
        idempotency_key="k",
    )


def test_the_codec_seals_the_sensitive_fields_and_opens_them_with_the_key() -> None:
    cipher = _cipher(generate_key())
    event = _posting_event()
    topic, state = encode_event(event, cipher)
    for clear in (b"Groceries", b"Corner shop", b"r-17"):
        assert clear not in state
    assert b"receipt" in state and b"1250" in state  # keys and amounts stay readable
    assert decode_event(topic, state, cipher) == event
    sealed = decode_event(topic, state)  # the projections' view: still text, still sealed
    assert isinstance(sealed, ev.PostingRecorded) and sealed.description.startswith(SEAL_PREFIX)
    assert encode_event(event) == (topic, msgspec.json.encode(event))  # no key: as before


def test_every_sealed_field_exists_on_its_event() -> None:
    for event_type, fields in SEALED_FIELDS.items():
        for name, _ in fields:
            assert name in event_type.__struct_fields__, (event_type, name)


def test_stored_answers_are_sealed_whole() -> None:
    cipher = _cipher(generate_key())
    record = SpaceRecord(
        id=uuid4(), name="Smith household", base_currency="USD", recorded_at=datetime.now(UTC)
    )
    stored = encode_outcome(record, cipher)
    assert b"Smith" not in stored and decode_outcome(stored, cipher) == record
    assert decode_outcome(encode_outcome(record)) == record


def _nonce_of(sealed_blob: bytes) -> bytes:
    start = len(SEAL_PREFIX) + 9
    return sealed_blob[start : start + NONCE_BYTES]


def test_nonces_never_repeat_within_a_process_or_across_a_fork() -> None:
    cipher = _cipher(generate_key())
    count = NONCES_PER_DRAW * 2 + 3  # across draws from the operating system
    nonces = {_nonce_of(cipher.seal_blob(b"x")) for _ in range(count)}
    assert len(nonces) == count
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child seals from the draw it inherited: it must not reuse it
        os.write(write_end, _nonce_of(cipher.seal_blob(b"x")))
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read_end, NONCE_BYTES)
    os.close(read_end)
    os.close(write_end)
    assert from_child != _nonce_of(cipher.seal_blob(b"x"))
    assert from_child not in nonces


def test_the_derived_secret_survives_a_rotation_and_differs_from_the_keys() -> None:
    old, new = generate_key(), generate_key()
    secret = _cipher(old).derived_secret(b"purpose")
    assert secret is not None and secret == _cipher(new, old).derived_secret(b"purpose")
    assert secret != _cipher(old).derived_secret(b"another purpose")
    assert CLEAR.derived_secret(b"purpose") is None


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=16, max_size=16))
def test_stored_fingerprints_are_keyed_and_match_under_any_listed_key_or_plain(
    digest: bytes, other: bytes
) -> None:
    old, new = generate_key(), generate_key()
    before, rotated = _cipher(old), _cipher(new, old)
    assert CLEAR.fingerprint(digest) == digest  # no key: stored as the digest
    stored = before.fingerprint(digest)
    assert len(stored) == len(digest) and stored != digest
    assert rotated.fingerprint(digest) not in (stored, digest)  # the sealing key's, now `new`
    for cipher in (before, rotated):
        assert cipher.fingerprint_matches(cipher.fingerprint(digest), digest)
        assert cipher.fingerprint_matches(digest, digest)  # recorded before a key was set
    assert rotated.fingerprint_matches(stored, digest)  # recorded under the older key
    assert not before.fingerprint_matches(rotated.fingerprint(digest), digest)  # lacks `new`
    assert not _cipher(generate_key()).fingerprint_matches(stored, digest)  # another key
    assert not CLEAR.fingerprint_matches(stored, digest)
    if other != digest:
        for cipher in (CLEAR, before, rotated):
            assert not cipher.fingerprint_matches(cipher.fingerprint(other), digest)
