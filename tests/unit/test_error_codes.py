"""Every way a command can fail is a named error class with the stable code of API.md, and the
classes say whether the refusal is stored with the idempotency key (409 and 422: yes; 400, 404 and
503: no, so the client may fix the request and retry with the same key)."""

from __future__ import annotations

import pytest

from ledger_core import errors

#: API.md's codes that the core raises, by HTTP status (401/403 belong to the HTTP layer).
API_CODES: dict[int, set[str]] = {
    400: {"malformed-request", "idempotency-key-missing"},
    404: {"space-not-found", "account-not-found", "posting-not-found"},
    409: {
        "idempotency-key-reused",
        "idempotency-key-in-flight",
        "account-code-taken",
        "posting-not-pending",
        "posting-not-posted",
        "posting-already-reversed",
        "account-not-empty",
        "asset-exists",
    },
    422: {
        "invalid-request",
        "invalid-amount",
        "unknown-currency",
        "unbalanced-posting",
        "currency-mismatch",
        "too-few-entries",
        "too-many-entries",
        "insufficient-funds",
        "account-frozen",
        "account-closed",
        "exceeds-pending-amount",
        "pending-expired",
        "batch-too-large",
        "batch-item-failed",
    },
    503: {"unavailable", "position-not-reached"},
}
ALL_API_CODES = set().union(*API_CODES.values())


def test_every_api_code_has_its_error_class() -> None:
    missing = ALL_API_CODES - set(errors.ERROR_CLASSES)
    assert not missing, missing


def test_codes_are_unique_and_documented() -> None:
    classes = list(errors.ERROR_CLASSES.values())
    assert len({cls.code for cls in classes}) == len(classes)
    for cls in classes:
        assert issubclass(cls, errors.LedgerError)
        assert cls.__doc__ and cls.__doc__.strip(), cls.__name__


@pytest.mark.parametrize("status", sorted(API_CODES))
def test_stored_refusals_are_exactly_the_409_and_422_ones(status: int) -> None:
    for code in API_CODES[status]:
        cls = errors.ERROR_CLASSES[code]
        if code == "idempotency-key-in-flight":
            assert not cls.stored  # a duplicate still running: the client retries later
        else:
            assert cls.stored == (status in (409, 422)), code


def test_only_account_state_refusals_make_a_declined_posting() -> None:
    assert {"insufficient-funds", "account-frozen", "account-closed"} == errors.DECLINE_CODES


def test_a_stored_refusal_is_rebuilt_from_its_code() -> None:
    error = errors.error_from_code(
        "batch-item-failed", "posting 3 was refused", {"index": 3, "item_code": "invalid-amount"}
    )
    assert isinstance(error, errors.BatchItemFailed)
    assert (error.code, error.detail, error.extra) == (
        "batch-item-failed",
        "posting 3 was refused",
        {"index": 3, "item_code": "invalid-amount"},
    )
    assert (error.replayed, error.position, error.posting_id) == (False, None, None)
    unknown = errors.error_from_code("from-a-newer-version", "detail")
    assert type(unknown) is errors.LedgerError


def test_default_detail_is_the_first_docstring_line() -> None:
    assert errors.InsufficientFunds().detail == (
        "The posting would take an account's available balance below minus its overdraft limit."
    )


def test_the_readme_lists_every_code_beyond_api_md_with_its_status() -> None:
    """A client reads API.md's table; every other code the API can answer is in the README,
    with its status, so none reaches a client undocumented."""
    import re
    from pathlib import Path

    from api.problems import STATUS_BY_CODE

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    beyond = set(STATUS_BY_CODE) - ALL_API_CODES - {"unauthenticated", "forbidden"}
    assert beyond, "the README's list would be empty: drop this test and the README's note"
    for code in sorted(beyond):
        listed = re.search(rf"(\d{{3}})\s+`{re.escape(code)}`", readme)
        assert listed is not None, f"{code} is not in the README with its status"
        assert int(listed.group(1)) == STATUS_BY_CODE[code], code
