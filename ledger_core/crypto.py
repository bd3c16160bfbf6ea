"""Encryption at rest of sensitive text (DESIGN.md): AES-256-GCM with `cryptography`.

What is sealed: the names of spaces, accounts and assets, posting descriptions and merchants,
metadata values (keys stay clear: they are field names, not content) and the reasons a client
gives for a freeze, close or void, in every event;
the stored answers of commands (`ledger_commands.outcome`) and the snapshots of spaces, whole.
The projections copy sealed text into the read tables as it is (they never need the plaintext,
so they need no key and a replay stays byte-identical); the API opens it when it answers.

Keys come from `LEDGER_ENCRYPTION_KEY`: one or more keys of 32 random bytes, base64 (as
`ledger keygen` prints them), separated by commas. The first seals; all of them open, so a key is
rotated by putting a new one first and keeping the old ones (the log is append-only: what an old
key sealed stays sealed with it). Each sealed value names its key by a short id, and the store
records the id of every key that has sealed (`ledger_keys`): opening a store that holds sealed
data without its keys is refused (`EncryptionKeyMissing`), never answered with garbage, and no
key is ever generated implicitly.

A sealed text is `ldgenc1.<key id>.<base64url(nonce | ciphertext | tag)>`; a sealed blob is the
same prefix in bytes followed by the raw nonce, ciphertext and tag. The empty text stays empty
(it tells nothing). A value without the prefix is clear text written before encryption was
turned on, and reads as it is; a value with it is opened or refused (`EncryptionKeyMissing`,
`SealBroken`), never answered sealed. (So clear text that happened to start with `ldgenc1.`,
written before a key was set, would be refused: the prefix is the price of telling them apart.)

Limits of the scheme, stated: nonces are random (96 bits), so one key should seal at most about
2^32 values (NIST SP 800-38D), about a billion postings at one to four sealed values each:
rotate long before. The associated data is constant, so someone who can write to the database
could move a sealed value from one row to another undetected (confidentiality at rest is the
goal, not integrity against a database writer).

A command's fingerprint (`ledger_commands.fingerprint`, what tells a retry from a reused
idempotency key) is a digest of the whole request, sealed fields included. Stored as it is, it
would let someone holding the database test a guess of a low-entropy field (a description, a
merchant) together with all the clear ones; so with a key it is stored keyed (BLAKE2b keyed with
a secret derived from the sealing key, `Cipher.fingerprint`). A retry matches a stored
fingerprint keyed with any listed key, or the plain digest of a command recorded before a key
was set (`Cipher.fingerprint_matches`), so rotations and turning encryption on never turn a
retry into `idempotency-key-reused`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Mapping
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

#: AES-256: a key is 32 bytes.
KEY_BYTES: Final = 32
#: GCM's standard nonce, drawn at random for every value sealed.
NONCE_BYTES: Final = 12
#: Nonces drawn from the operating system at once (see `_Nonces`).
NONCES_PER_DRAW: Final = 4096
#: Keys `LEDGER_ENCRYPTION_KEY` may list (the current one and those it replaced).
MAX_KEYS: Final = 16
#: The prefix of every sealed value (its format version is the "1").
SEAL_PREFIX: Final = "ldgenc1."
_SEAL_PREFIX_BYTES: Final = SEAL_PREFIX.encode("ascii")
#: A key id: hex of the first 4 bytes of HMAC-SHA256(key, KEY_ID_LABEL).
KEY_ID_CHARS: Final = 8
KEY_ID_LABEL: Final = b"ledger encryption key id"
#: Associated data bound into every tag: a value sealed by another program with the same key
#: does not open here.
_ASSOCIATED_DATA: Final = b"ledger-core sealed value v1"
_HEADER_CHARS: Final = len(SEAL_PREFIX) + KEY_ID_CHARS + 1
#: What the key of a command's stored fingerprint is derived from each encryption key with.
FINGERPRINT_KEY_LABEL: Final = b"ledger idempotency fingerprint key"
#: Sealed texts whose clear text a cipher remembers, the least recently opened dropped past it.
#: A read of an account opens its name every time (base64 and AES-GCM: about 5% of a GET
#: account's CPU); the same sealed text always opens to the same text. A value that does not
#: open is not remembered (it raises every time).
OPENED_TEXT_MEMORY: Final = 4096


class _Nonces:
    """Random nonces, drawn from the operating system's generator `NONCES_PER_DRAW` at a time.
    `os.urandom` releases the GIL: called once per value in the writer thread, each call waited
    for the GIL to come back (measured 0.6-1.3 ms per seal with a busy event loop beside it,
    against 2.7 us alone). Each nonce is still 96 fresh random bits; a forked child discards
    the draw it inherited, so two processes never share one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._draw = b""
        self._offset = 0

    def next(self) -> bytes:
        with self._lock:
            offset = self._offset
            if offset >= len(self._draw):
                self._draw, offset = os.urandom(NONCE_BYTES * NONCES_PER_DRAW), 0
            self._offset = offset + NONCE_BYTES
            return self._draw[offset : offset + NONCE_BYTES]

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._draw, self._offset = b"", 0


_nonces = _Nonces()
os.register_at_fork(after_in_child=_nonces.forget)


class EncryptionKeyError(Exception):
    """The encryption keys given do not fit (malformed, or not the store's)."""


class EncryptionKeyInvalid(EncryptionKeyError):
    """`LEDGER_ENCRYPTION_KEY` is not a list of base64 32-byte keys."""


class EncryptionKeyMissing(EncryptionKeyError):
    """The store holds values sealed with keys that were not given."""


class SealBroken(EncryptionKeyError):
    """A sealed value that does not open with its key: altered or corrupt."""


def generate_key() -> str:
    """A fresh random key, as `LEDGER_ENCRYPTION_KEY` takes it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode("ascii")


def key_id(key: bytes) -> str:
    return hmac.new(key, KEY_ID_LABEL, hashlib.sha256).hexdigest()[:KEY_ID_CHARS]


def parse_keys(setting: str) -> list[bytes]:
    """The keys of a `LEDGER_ENCRYPTION_KEY` value (base64, standard or URL-safe alphabet,
    comma-separated, the sealing key first)."""
    texts = [text.strip() for text in setting.split(",")]
    if not texts or any(not text for text in texts):
        raise EncryptionKeyInvalid(
            "LEDGER_ENCRYPTION_KEY is one or more base64 keys separated by commas "
            "(`ledger keygen` prints a new one)"
        )
    if len(texts) > MAX_KEYS:
        raise EncryptionKeyInvalid(f"LEDGER_ENCRYPTION_KEY lists at most {MAX_KEYS} keys")
    keys = []
    for number, text in enumerate(texts, start=1):
        try:
            key = base64.b64decode(
                text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True
            )
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise EncryptionKeyInvalid(
                f"key {number} of LEDGER_ENCRYPTION_KEY is not {KEY_BYTES} bytes in base64 "
                "(`ledger keygen` prints a new one)"
            )
        keys.append(key)
    if len({key_id(key) for key in keys}) != len(keys):
        raise EncryptionKeyInvalid("LEDGER_ENCRYPTION_KEY lists the same key twice")
    return keys


class Cipher:
    """Seals and opens values with the keys given; with no keys it is the identity (clear text,
    for a ledger run without `LEDGER_ENCRYPTION_KEY`)."""

    def __init__(self, keys: list[bytes]) -> None:
        self._keys = {key_id(key): AESGCM(key) for key in keys}
        self._oldest_key = keys[-1] if keys else b""
        self.key_ids: tuple[str, ...] = tuple(self._keys)
        self.enabled = bool(keys)
        self._sealing_id = self.key_ids[0] if keys else ""
        self._sealing = self._keys[self._sealing_id] if keys else None
        self._text_header = f"{SEAL_PREFIX}{self._sealing_id}."
        self._blob_header = self._text_header.encode("ascii")
        #: BLAKE2b keys of stored fingerprints, one per key, the sealing key's first.
        self._fingerprint_keys = [
            hmac.new(key, FINGERPRINT_KEY_LABEL, hashlib.sha256).digest() for key in keys
        ]
        self._open_sealed = functools.lru_cache(maxsize=OPENED_TEXT_MEMORY)(self._open_text)

    @classmethod
    def from_setting(cls, setting: str | None) -> Cipher:
        return cls(parse_keys(setting) if setting else [])

    def derived_secret(self, label: bytes) -> str | None:
        """A secret for another purpose (HMAC-SHA256 of `label` under the oldest key, the last
        listed: rotating keys by putting a new one first leaves it unchanged), or None without
        keys."""
        if not self._oldest_key:
            return None
        return hmac.new(self._oldest_key, label, hashlib.sha256).hexdigest()

    # Fingerprints ------------------------------------------------------------------------------

    def fingerprint(self, digest: bytes) -> bytes:
        """The stored form of a request's digest (`commands.command_fingerprint`): keyed with
        the sealing key, the same length; without keys, the digest itself."""
        if not self._fingerprint_keys:
            return digest
        return _keyed(digest, self._fingerprint_keys[0])

    def fingerprint_matches(self, stored: bytes, digest: bytes) -> bool:
        """Whether a stored fingerprint is that of a request with this digest: keyed with any
        of the keys (one that sealed before a rotation), or the plain digest (a command
        recorded before a key was set, or with none)."""
        if hmac.compare_digest(stored, digest):
            return True
        return any(
            hmac.compare_digest(stored, _keyed(digest, key)) for key in self._fingerprint_keys
        )

    # Text --------------------------------------------------------------------------------------

    def seal(self, text: str) -> str:
        if self._sealing is None or not text:
            return text
        nonce = _nonces.next()
        sealed = self._sealing.encrypt(nonce, text.encode("utf-8"), _ASSOCIATED_DATA)
        return self._text_header + base64.urlsafe_b64encode(nonce + sealed).decode("ascii")

    def seal_metadata(self, metadata: Mapping[str, str]) -> dict[str, str]:
        return {key: self.seal(value) for key, value in metadata.items()}

    def open(self, text: str) -> str:
        if not text.startswith(SEAL_PREFIX):
            return text
        return self._open_sealed(text)

    def _open_text(self, text: str) -> str:
        aead = self._aead_of(text)
        try:
            raw = base64.urlsafe_b64decode(text[_HEADER_CHARS:])
        except (binascii.Error, ValueError) as error:
            raise SealBroken("a sealed value is not base64") from error
        return self._open_raw(aead, raw).decode("utf-8")

    def open_optional(self, text: str | None) -> str | None:
        return None if text is None else self.open(text)

    def open_metadata(self, metadata: Mapping[str, str]) -> dict[str, str]:
        return {key: self.open(value) for key, value in metadata.items()}

    # Blobs -------------------------------------------------------------------------------------

    def seal_blob(self, data: bytes) -> bytes:
        if self._sealing is None:
            return data
        nonce = _nonces.next()
        return self._blob_header + nonce + self._sealing.encrypt(nonce, data, _ASSOCIATED_DATA)

    def open_blob(self, data: bytes) -> bytes:
        if not data.startswith(_SEAL_PREFIX_BYTES):
            return data
        aead = self._aead_of(data[:_HEADER_CHARS].decode("ascii", "replace"))
        return self._open_raw(aead, data[_HEADER_CHARS:])

    # -------------------------------------------------------------------------------------------

    def _aead_of(self, header: str) -> AESGCM:
        """The key named by a sealed value's header (`ldgenc1.<key id>.`). A key this cipher
        lacks is refused, never answered as text: another process may have started sealing
        with a newer key (a rotation under way) while this one runs with the old list."""
        found_id = header[len(SEAL_PREFIX) : len(SEAL_PREFIX) + KEY_ID_CHARS]
        aead = self._keys.get(found_id)
        if aead is None or header[_HEADER_CHARS - 1 : _HEADER_CHARS] != ".":
            raise EncryptionKeyMissing(
                f"a stored value is sealed with key {found_id!r}, which LEDGER_ENCRYPTION_KEY "
                f"({', '.join(self.key_ids) or 'unset'}) does not list"
            )
        return aead

    @staticmethod
    def _open_raw(aead: AESGCM, raw: bytes) -> bytes:
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _ASSOCIATED_DATA)
        except (InvalidTag, ValueError) as error:
            raise SealBroken(
                "a sealed value does not open with its key: altered or corrupt"
            ) from error


#: The cipher of a ledger run without keys: seals nothing, opens clear text as it is.
CLEAR: Final = Cipher([])


def _keyed(digest: bytes, key: bytes) -> bytes:
    return hashlib.blake2b(digest, key=key, digest_size=len(digest)).digest()


def check_store_keys(cipher: Cipher, registered: set[str]) -> None:
    """Refuse keys that cannot open what the store holds: every key id the store has recorded
    as having sealed must be among the cipher's."""
    missing = sorted(registered - set(cipher.key_ids))
    if not missing:
        return
    if not cipher.enabled:
        raise EncryptionKeyMissing(
            "this database holds encrypted text: set LEDGER_ENCRYPTION_KEY to its key "
            f"(key id {', '.join(missing)}); a new key would not open it"
        )
    raise EncryptionKeyMissing(
        f"this database holds text encrypted with key id {', '.join(missing)}, which "
        f"LEDGER_ENCRYPTION_KEY (key ids {', '.join(cipher.key_ids)}) does not list; "
        "keep every earlier key after the current one"
    )
