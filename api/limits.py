"""Limits of the HTTP layer, named in one place (TigerBeetle: put a limit on everything).

The domain limits (entries per posting, postings per batch, metadata size, amounts) live in
`ledger_core.limits` and are enforced by the core; these are the ones only the wire has. Each is
tested at and past its edge in tests/api/test_limits.py.
"""

from typing import Final

#: Largest request body accepted. A batch of the maximum 1000 postings with two entries and a
#: short description each is about 300 KiB; 2 MiB leaves room for metadata while bounding the
#: memory one request can take. Past it: 413 `request-too-large`.
MAX_REQUEST_BODY_BYTES: Final = 2 * 1024 * 1024

#: Page size of list reads (API.md): 50 by default, at most 500; more is 422 `invalid-request`.
DEFAULT_PAGE_LIMIT: Final = 50
MAX_PAGE_LIMIT: Final = 500

#: A client-sent `X-Request-ID` is kept if it is 1-128 characters of letters, digits and
#: `-_.:`; anything else is replaced by a fresh id (it is written into every event).
MAX_REQUEST_ID_LENGTH: Final = 128

#: Longest cursor text accepted in a query string (a cursor is the server's own short token).
MAX_CURSOR_LENGTH: Final = 512

#: Threads that run the synchronous read-model queries: as many as the read models' PostgreSQL
#: pool has connections (projections.queries.READ_POOL_MAX_CONNECTIONS), so no thread waits for
#: a connection while holding a place, and no more threads than that contend for the GIL.
READ_THREADS: Final = 8

#: Largest `Ledger-Min-Position` / `after` accepted: a signed 64-bit position.
MAX_POSITION: Final = 2**63 - 1

#: Catch-ups of the global stream asked for by requests with an unknown token start at most this
#: often (`api.token_catch_up`): a token issued by another process a moment ago is known on its
#: first request, and garbage tokens cost the writer at most ten store reads a second.
UNKNOWN_TOKEN_CATCH_UP_INTERVAL_S: Final = 0.1
