"""The relay's allow list without sockets: what an operator may write for an organisation, and that
it admits exactly the organisations written, by Registration ID or by whole id."""

from __future__ import annotations

import hashlib

import pytest

from p2psync.errors import InvalidInput
from p2psync.relay.allowed import AllowedOrgs, parse_list, parse_org
from p2psync.trust.keys import registration_id


def org(n: int) -> str:
    return hashlib.sha256(f"org {n}".encode()).hexdigest()


@pytest.mark.parametrize("n", range(20))
def test_a_registration_id_admits_its_organisation_and_no_other(n: int) -> None:
    shown = registration_id(org(n))
    for written in (shown, shown.lower(), shown.replace("-", ""), f"  {shown.replace('-', ' ')} "):
        allowed = AllowedOrgs.of([parse_org(written)])
        assert allowed.admits(org(n)), written
        assert not any(allowed.admits(org(m)) for m in range(20) if m != n)


def test_a_whole_id_admits_exactly_that_organisation() -> None:
    allowed = AllowedOrgs.of([parse_org(org(1).upper())])
    assert allowed.admits(org(1)) and not allowed.admits(org(1)[:20] + "0" * 44)
    assert len(allowed) == 1 and len(AllowedOrgs.of([parse_org(org(1)), parse_org(org(1))])) == 1


def test_an_enrollment_pin_is_matched_against_every_admitted_organisation() -> None:
    allowed = AllowedOrgs.of([parse_org(registration_id(org(1))), parse_org(org(2))])
    assert allowed.may_admit(org(1)[:6]) and allowed.may_admit(org(2)[:6])
    assert not allowed.may_admit(org(3)[:6])


@pytest.mark.parametrize("text", ["", "acme", "ABCD-EFGH-IJKL-MNO", "ABCD-EFGH-IJKL-MNO1", "ABCD-EFGH-IJKL-MNOPQ",
                                  "a" * 63, "g" * 64, "a" * 65, f"{'a' * 64} {'b' * 64}"])
def test_anything_else_is_refused_with_what_to_give(text: str) -> None:
    with pytest.raises(InvalidInput, match="is not an organisation: give its Registration ID"):
        parse_org(text)


def test_a_list_file_has_comments_and_blank_lines_and_names_a_bad_line() -> None:
    text = f"# our clients\n\n{registration_id(org(1))}  # Sharma Traders\n   {org(2)}\n"
    assert parse_list(text) == [org(1)[:20], org(2)]
    with pytest.raises(InvalidInput, match=r"^line 2: 'Sharma Traders' is not an organisation"):
        parse_list(f"{org(1)}\nSharma Traders\n")
