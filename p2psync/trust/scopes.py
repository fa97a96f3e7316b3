"""Read scopes by name, and who reads which office's books: what the policy's grants mean, without
the cryptography library, so that a report read with `sqlite3` alone (`views.report_at`) covers
exactly what the open node's would. `trust.policy` holds the keys and the signed grants."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

#: The scope of the masters document; an office's books are the scope `vouchers/<OFFICE>`.
MASTERS_SCOPE = "masters"
#: In the policy's grants, as a granted office: every office's books, present and future (`scope
#: grant OFFICE --all`); as the office granted to: every branch office, present and future. So
#: `{"*": ["*"]}` is an organisation whose offices all read each other's books (`init --open-books`).
EVERY_OFFICE = "*"


def office_scope(office: str) -> str:
    return f"vouchers/{office}"


def scope_of(doc: str) -> str:
    """The read scope a shared document belongs to: the masters, or the books of the office it is in
    (`vouchers/<OFFICE>/<YYYY-MM>`)."""
    return MASTERS_SCOPE if doc == MASTERS_SCOPE else "/".join(doc.split("/")[:2])


def scope_office(scope: str) -> str | None:
    """The office whose books a scope is; None for the masters."""
    return None if scope == MASTERS_SCOPE else scope.split("/", 1)[1]


def link_scope(source: str, target: str) -> str:
    """The scope of what office `source` writes that office `target` must read: its vouchers that
    touch `target`'s inter-office account."""
    return f"vouchers/{source}>{target}"


def inbound_scope(target: str) -> str:
    """The scope whose key opens every link into office `target`: held by the readers of its books."""
    return f"vouchers/>{target}"


def parse_link(scope: str) -> tuple[str, str] | None:
    """(source, target) of a link scope, None for any other scope."""
    if not scope.startswith("vouchers/") or ">" not in scope:
        return None
    source, _, target = scope[len("vouchers/"):].partition(">")
    return (source, target) if source and target else None


def granted(grants: Mapping[str, Iterable[str]], office: str) -> frozenset[str]:
    """What branch `office` is granted beyond its own books: its own grants and those to every branch
    office; `EVERY_OFFICE` among them means every office's books."""
    return frozenset({*grants.get(office, ()), *grants.get(EVERY_OFFICE, ())})


def reads(grants: Mapping[str, Iterable[str]], office: str, is_head: bool) -> frozenset[str] | None:
    """The offices whose books a member of `office` may read; None for every office, including offices
    added later (a head office, or a branch granted `EVERY_OFFICE`). Every member reads the masters."""
    if is_head:
        return None
    offices = granted(grants, office)
    return None if EVERY_OFFICE in offices else frozenset({office, *offices})
