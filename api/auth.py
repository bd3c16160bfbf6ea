"""Authentication and authorisation (API.md "Authentication").

`Authorization: Bearer <token>`. A token is >= 128 random bits; the ledger stores only its
SHA-256 hash (IssueToken), so a stolen database gives no usable token. A token has a role
(`admin` everything, `write` commands and reads in its spaces, `read` reads in its spaces) and a
list of spaces. `LEDGER_ADMIN_TOKEN` bootstraps the first admin; its hash is compared in
constant time. A space outside a token's grants answers 404 exactly as a space that does not
exist, whatever the role; inside it, a read token writing gets 403.

An admin token issued with no spaces is granted every space, and only such a token may use the
routes outside spaces (spaces, assets, tokens, the events feed). An admin token issued with a
list of spaces is held to it like any other token (API.md: "a space outside the token's grants is
404 whatever the role"): inside its spaces it may do what an admin may there (everything a write
token may), and the global routes answer it 403. (Until now its spaces were accepted, echoed
back and ignored: a client that asked for a token limited to one space got one for all of them.)
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final, Literal
from uuid import UUID

from api.problems import Forbidden, Unauthenticated
from ledger_core import errors
from ledger_core.ledger import Ledger

Role = Literal["admin", "write", "read"]
#: What a route needs: a space read, a space command, admin, or any valid token.
Access = Literal["space-read", "space-write", "admin", "any"]

#: The `token_id` recorded in events for commands sent with `LEDGER_ADMIN_TOKEN`.
BOOTSTRAP_ADMIN_ID: Final = "bootstrap-admin"
#: Tokens we issue: a prefix (so leaked tokens are easy to scan for) and 256 bits.
TOKEN_PREFIX: Final = "ldg_"
#: Longest Authorization token looked at; longer ones are refused unread.
MAX_TOKEN_LENGTH: Final = 256
#: Bearer tokens whose hash is remembered (least recently used dropped past it). Hashing the
#: token on every request was ~3% of a GET account's CPU. Only the hash computation is
#: remembered: every request still looks the hash up, so a revoked token is refused at once.
TOKEN_HASH_MEMORY: Final = 1024


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id, role and granted spaces."""

    token_id: str
    role: Role
    spaces: frozenset[UUID]

    @property
    def is_global_admin(self) -> bool:
        """An admin token granted every space (issued with no spaces)."""
        return self.role == "admin" and not self.spaces

    def sees(self, space_id: UUID) -> bool:
        return space_id in self.spaces or self.is_global_admin

    def may(self, access: Access) -> bool:
        if access == "admin":
            return self.is_global_admin
        if access == "space-write":
            return self.role in ("admin", "write")
        return True


class UnknownToken(Unauthenticated):
    """A well-formed bearer token whose hash this process does not know: perhaps issued by
    another process a moment ago (`api.gate` catches up once before answering 401). Its answer
    is the same as for a revoked token."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


#: `hash_token` of the bearer tokens seen lately (a pure function: remembering changes no answer).
_remembered_hash = functools.lru_cache(maxsize=TOKEN_HASH_MEMORY)(hash_token)


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def derived_token(secret: str, idempotency_key: str) -> str:
    """The token `POST /v1/tokens` issues for an idempotency key: HMAC-SHA256 of the key under a
    server secret. Deriving it (instead of drawing it at random) lets an exact replay with the same
    key answer the very same body without the token ever being stored: only its hash is. Without
    the secret nobody can compute it, so it is as unguessable as a random 256-bit token."""
    digest = hmac.new(secret.encode("utf-8"), idempotency_key.encode("utf-8"), hashlib.sha256)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated("send Authorization: Bearer <token>")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_LENGTH:
        raise Unauthenticated("send Authorization: Bearer <token>")
    return token


def authenticate(
    authorization: str | None, ledger: Ledger, admin_token_hash: str | None
) -> Principal:
    """The principal of a bearer token, or 401 `unauthenticated`."""
    token_hash = _remembered_hash(bearer_token(authorization))
    if admin_token_hash is not None and hmac.compare_digest(token_hash, admin_token_hash):
        return Principal(BOOTSTRAP_ADMIN_ID, "admin", frozenset())
    record = ledger.token_by_hash(token_hash)
    if record is None:
        raise UnknownToken("the token is unknown or revoked")
    if record.revoked:
        raise Unauthenticated("the token is unknown or revoked")
    return Principal(str(record.id), record.role, frozenset(record.spaces))


def authorise(principal: Principal, access: Access, space_id: UUID | None) -> None:
    """Grants first (404 as for a missing space), then the role (403)."""
    if space_id is not None and not principal.sees(space_id):
        raise errors.SpaceNotFound(f"no space {space_id}")
    if not principal.may(access):
        if principal.role == "admin":
            raise Forbidden("an admin token limited to some spaces may not do this")
        raise Forbidden(f"a {principal.role} token may not do this")
