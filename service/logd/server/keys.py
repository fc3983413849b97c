"""The key ring: every key logd accepts, by role and stage, looked up by key_id.

A KeyRing is immutable. A reload builds a new one and swaps it in whole
(`KeyHolder.ring = new`), so the ingest loop never sees half a rotation.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from logd.errors import SecretsError
from logd.wire import Signer


class Role(StrEnum):
    READ = "read"
    WRITE = "write"


class Stage(StrEnum):
    """Secrets Manager's stage labels; env and file sources use them too."""

    CURRENT = "AWSCURRENT"
    PENDING = "AWSPENDING"
    PREVIOUS = "AWSPREVIOUS"


# A correct read secret is never throttled (a neighbour's failures must not lock a reader
# out), so guessing is bounded by the secret alone: 32 random bytes put it out of reach.
MIN_SECRET_BYTES = 32


def _token_digest(secret: bytes) -> bytes:
    # HTTP tokens are compared as digests: equal length, constant time, no length leak.
    return hashlib.sha256(secret).digest()


@dataclass(frozen=True, slots=True)
class Key:
    role: Role
    stage: Stage
    signer: Signer = field(repr=False)
    token_digest: bytes = field(repr=False)

    @property
    def key_id(self) -> str:
        return self.signer.key_id.hex()

    @classmethod
    def from_secret(cls, role: Role, stage: Stage, secret: bytes) -> Key:
        return cls(role, stage, Signer(secret), _token_digest(secret))


class KeyRing:
    """All accepted keys. Several keys may share a 4-byte key_id (a 1 in 2**32 chance):
    lookups return every key with that id and the verifier tries each."""

    __slots__ = ("_by_id", "keys")

    def __init__(self, keys: Iterable[Key]) -> None:
        self.keys: tuple[Key, ...] = tuple(keys)
        by_id: dict[bytes, tuple[Key, ...]] = {}
        for key in self.keys:
            by_id[key.signer.key_id] = (*by_id.get(key.signer.key_id, ()), key)
        self._by_id = by_id

    @classmethod
    def from_secrets(
        cls, secrets: Mapping[tuple[Role, Stage], str | bytes], *, min_bytes: int = 1
    ) -> KeyRing:
        """Build a ring from (role, stage) -> secret; raises SecretsError on unsafe input:
        an empty secret, one shorter than `min_bytes` (the sources ask for
        MIN_SECRET_BYTES), the same secret for both roles."""
        keys: list[Key] = []
        seen: dict[bytes, Role] = {}
        for (role, stage), value in secrets.items():
            secret = value.encode() if isinstance(value, str) else value
            if not secret:
                raise SecretsError(f"the {role} secret ({stage}) is empty; set a non-empty value")
            if len(secret) < min_bytes:
                raise SecretsError(
                    f"the {role} secret ({stage}) is {len(secret)} bytes, too short to resist "
                    f"guessing; use at least {min_bytes} random bytes (openssl rand -base64 32)"
                )
            digest = _token_digest(secret)
            if seen.setdefault(digest, role) != role:
                # A reader holding the write secret could forge events: refuse the set-up.
                raise SecretsError("the read and write secrets are the same; make them differ")
            keys.append(Key.from_secret(role, stage, secret))
        ring = cls(keys)
        for role in Role:
            if ring.current(role) is None:
                raise SecretsError(f"no current {role} secret is configured")
        return ring

    def lookup(self, key_id: bytes) -> tuple[Key, ...]:
        return self._by_id.get(key_id, ())

    def current(self, role: Role) -> Key | None:
        for key in self.keys:
            if key.role is role and key.stage is Stage.CURRENT:
                return key
        return None

    def check_token(self, token: str, role: Role = Role.READ) -> Key | None:
        """The key of `role` whose secret is `token`, compared in constant time over all keys."""
        # A header's bytes that are not UTF-8 arrive as surrogates (aiohttp decodes them with
        # surrogateescape): encode them back; they never match a secret, and are not a 500.
        digest = _token_digest(token.encode("utf-8", "surrogateescape"))
        found: Key | None = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.token_digest) and key.role is role:
                found = key
        return found

    def describe(self) -> list[dict[str, str]]:
        """Public facts about each key (never key material), for /info."""
        return [{"role": k.role, "stage": k.stage, "key_id": k.key_id} for k in self.keys]


class KeyHolder:
    """The one mutable reference to the current KeyRing; assignment swaps it atomically."""

    __slots__ = ("ring",)

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring
