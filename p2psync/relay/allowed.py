"""Which organisations a relay serves, when its operator does not want to serve every one
(`p2psync relay --allow-org`): without a list anyone can create an organisation and use the relay as
free storage.

An operator knows its clients by the Registration ID `p2psync init --head-office` prints: the first 80
bits of the organisation id (a hash of the root key), in base32. The relay learns the full id from the
member's root certificate at authentication, so a Registration ID is checked as a prefix of it; nothing
secret is needed in either direction. Matching a given Registration ID with another root key takes
some 2^80 key generations, so a prefix admits only the organisation it was read from. The full 64-hex
id (what the relay's metrics and log show) is accepted too.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass

from p2psync.errors import InvalidInput

ORG_ID = re.compile(r"[0-9a-f]{64}")
REGISTRATION_ID = re.compile(r"[A-Z2-7]{16}")
#: Hex digits of the organisation id a Registration ID shows (80 bits).
REGISTRATION_HEX = 20


def parse_org(text: str) -> str:
    """An organisation as the operator wrote it, as hex: the whole id, or the prefix a Registration
    ID stands for (`ABCD-EFGH-IJKL-MNOP`; any case, dashes and spaces optional)."""
    value = text.strip()
    if ORG_ID.fullmatch(value.lower()):
        return value.lower()
    compact = re.sub(r"[\s-]", "", value).upper()
    if REGISTRATION_ID.fullmatch(compact):  # 16 base32 letters always decode, to 10 bytes
        return base64.b32decode(compact).hex()
    raise InvalidInput(f"{text.strip()!r} is not an organisation: give its Registration ID "
                       "(XXXX-XXXX-XXXX-XXXX, printed by 'p2psync init') or its 64-character hex id")


def parse_list(text: str) -> list[str]:
    """The organisations in an allow-list file: one per line, '#' starts a comment, blank lines are
    skipped. A bad line is named by its number, so the operator finds it."""
    orgs = []
    for number, line in enumerate(text.splitlines(), 1):
        value = line.split("#", 1)[0].strip()
        if not value:
            continue
        try:
            orgs.append(parse_org(value))
        except InvalidInput as exc:
            raise InvalidInput(f"line {number}: {exc}") from None
    return orgs


@dataclass(frozen=True)
class AllowedOrgs:
    """The organisations a relay admits, each by its whole id or by its Registration ID's prefix."""

    ids: frozenset[str]
    prefixes: frozenset[str]

    @classmethod
    def of(cls, orgs: Iterable[str]) -> AllowedOrgs:
        """From `parse_org`'s results."""
        orgs = set(orgs)
        return cls(frozenset(o for o in orgs if len(o) == 64),
                   frozenset(o for o in orgs if len(o) == REGISTRATION_HEX))

    def admits(self, org: str) -> bool:
        """Whether members of `org` (its whole id, from their root certificate) are served."""
        return org in self.ids or org[:REGISTRATION_HEX] in self.prefixes

    def may_admit(self, pin: str) -> bool:
        """Whether an enrollment request naming this organisation pin (a short hex prefix of the id,
        from the invite code) may be for an admitted organisation. A pin is too short to admit anyone:
        the request still needs that organisation's head office, which must have been admitted."""
        return any(org.startswith(pin) for org in self.ids | self.prefixes)

    def __len__(self) -> int:
        return len(self.ids) + len(self.prefixes)
