"""Errors a user may see.

Every failure caused by input (a command's arguments, an imported file, a peer's bytes) is raised as
a `P2PSyncError` whose message is one line fit to print; anything else is a bug.
"""


class P2PSyncError(Exception):
    """A refusal with a message meant for the user; nothing was changed."""


class InvalidInput(P2PSyncError):
    """An amount, date, name or file the user gave is not acceptable."""


class RuleViolation(P2PSyncError):
    """A change would leave the books invalid (unbalanced, unknown ledger, wrong voucher type...)."""


class NotFound(P2PSyncError):
    """A ledger, voucher or office named by the user does not exist."""


class StoreError(P2PSyncError):
    """The node's database cannot be used (missing, locked, full, or not a p2psync home)."""
