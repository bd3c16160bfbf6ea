"""Derived ids are persistent: the fast uuid5 must equal the standard library's, bit for bit."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from ledger_core import rules

printable_keys = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=255
)


@given(namespace=st.uuids(), key=printable_keys, index=st.integers(min_value=0, max_value=999))
def test_fast_uuid5_equals_the_standard_library(namespace: uuid.UUID, key: str, index: int) -> None:
    fast = rules.command_id(namespace, key)
    slow = uuid.uuid5(namespace, "command:" + key)
    assert fast == slow and hash(fast) == hash(slow) and str(fast) == str(slow)
    assert fast.version == 5 and fast.variant == uuid.RFC_4122
    assert rules.batch_item_id(namespace, key, index) == uuid.uuid5(
        namespace, f"item\x00{index}\x00{key}"
    )
