"""One-time invite codes and the enrollment exchange they authenticate.

A code is 20 random-looking bytes in base32 (``ABCD-EFGH-...``, 8 groups of 4):

    invite id (4) | secret (12) | organisation pin (3) | check byte (1)

The 96-bit secret never crosses the wire: both sides derive keys from it with HKDF-SHA256 (RFC 5869)
and prove knowledge with HMAC-SHA256 (RFC 2104). A recorded exchange therefore gives nothing to guess
offline against, and the head office's reply (certificate, policy, names) is encrypted under a key
only the code's holder can derive. The pin lets the joiner tell at once that it reached the head
office of another organisation; the check byte catches typos before anything is sent. It is a CRC-8
(polynomial x^8 + x^2 + x + 1) of the rest, which catches every error burst of up to 8 bits, so
every mistyped character (5 bits of the code) without fail; a hash's first byte would let one typo in
256 through.

Online guessing is bounded by `AttemptLimit` at the head office rather than by locking an invite
after wrong tries: anyone who saw an invite id (a relay does) could trigger such a lock without the
code, while at the limit the guesses an invite can receive before it expires are a negligible
fraction of its 2**96 secrets (`most_guesses`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psync.errors import InvalidInput

INVITE_ID_BYTES, SECRET_BYTES, PIN_BYTES = 4, 12, 3
CODE_BYTES = INVITE_ID_BYTES + SECRET_BYTES + PIN_BYTES + 1
#: Enrollment attempts the head office answers, over all sources and invites: a burst, then a rate.
ENROLL_BURST = 30
ENROLL_PER_SECOND = 0.2


@dataclass(frozen=True)
class InviteCode:
    invite_id: bytes
    secret: bytes
    pin: bytes

    @classmethod
    def new(cls, org: str) -> InviteCode:
        return cls(os.urandom(INVITE_ID_BYTES), os.urandom(SECRET_BYTES), org_pin(org))

    def text(self) -> str:
        raw = self.invite_id + self.secret + self.pin
        raw += bytes([crc8(raw)])
        encoded = base64.b32encode(raw).decode()
        return "-".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))

    @classmethod
    def parse(cls, text: str) -> InviteCode:
        cleaned = re.sub(r"[\s-]", "", text).upper().replace("0", "O").replace("1", "I").replace("8", "B")
        try:
            raw = base64.b32decode(cleaned)
        except ValueError:
            raise InvalidInput("the invite code has characters that are not in a code; check it again") from None
        if len(raw) != CODE_BYTES:
            raise InvalidInput(f"the invite code should be {CODE_BYTES * 8 // 5} letters and digits long; check it again")
        body, check = raw[:-1], raw[-1:]
        if bytes([crc8(body)]) != check:
            raise InvalidInput("the invite code has a typo (its check character does not match)")
        return cls(body[:INVITE_ID_BYTES], body[INVITE_ID_BYTES:INVITE_ID_BYTES + SECRET_BYTES],
                   body[INVITE_ID_BYTES + SECRET_BYTES:])

    def keys(self) -> EnrollKeys:
        return derive_keys(self.invite_id, self.secret, self.pin)


def crc8(data: bytes) -> int:
    """CRC-8 (polynomial 0x07, MSB first, no reflection): the code's check byte."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


@dataclass(frozen=True)
class EnrollKeys:
    mac: bytes
    enc: bytes


def derive_keys(invite_id: bytes, secret: bytes, pin: bytes) -> EnrollKeys:
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=invite_id,
               info=b"p2psync-enroll-v1\x00" + pin).derive(secret)
    return EnrollKeys(okm[:32], okm[32:])


def org_pin(org: str) -> bytes:
    return bytes.fromhex(org)[:PIN_BYTES]


def tag(key: bytes, label: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA256 over length-prefixed parts, so no two different messages share an input."""
    mac = hmac.new(key, label, hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(4, "big") + part)
    return mac.digest()


def same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


@dataclass
class AttemptLimit:
    """A token bucket on enrollment attempts. The caller passes the time (a monotonic clock), so the
    limit has no I/O and tests can drive it without waiting."""

    per_second: float = ENROLL_PER_SECOND
    burst: float = ENROLL_BURST
    tokens: float = field(init=False)
    stamp: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst  # a full bucket: the first attempts after a start are answered

    def allow(self, now: float) -> bool:
        """Spend one attempt if one is left at time `now`; a clock going backwards adds nothing."""
        if self.stamp is not None:
            self.tokens = min(self.burst, self.tokens + max(0.0, now - self.stamp) * self.per_second)
        self.stamp = now if self.stamp is None else max(self.stamp, now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def most_guesses(seconds: float, per_second: float = ENROLL_PER_SECOND, burst: float = ENROLL_BURST) -> int:
    """The most codes anyone can try at the head office within `seconds` (an invite's lifetime)."""
    return int(burst + per_second * seconds)


def guess_chance(seconds: float) -> float:
    """An upper bound on the chance that online guessing finds any invite's secret within `seconds`:
    every attempt names one invite and tests one of its 2**96 secrets."""
    return most_guesses(seconds) / 2 ** (8 * SECRET_BYTES)
