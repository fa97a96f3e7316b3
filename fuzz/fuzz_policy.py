"""Signed policies (`trust.policy`). Refused input raises `PolicyError` only, `claimed_version`
never raises, and a policy accepted decodes to values of the declared types. Inputs starting with
``S`` are a policy body signed by the real root key, so that decoding past the signature is fuzzed:
a decoder trusts no input's shape, even a signed one."""

from __future__ import annotations

import json

from fuzz.common import world
from p2psync.trust import policy as policies
from p2psync.trust.policy import Policy, PolicyError


def check(data: bytes) -> None:
    w = world()
    blob = _signed(data[1:]) if data[:1] == b"S" else data
    claimed = policies.claimed_version(blob)
    assert type(claimed) is int and claimed >= 0
    try:
        policy = policies.verify(blob, w.root.public_key(), w.org)
    except PolicyError as exc:
        assert str(exc)
        return
    assert claimed == policy.version
    _check_types(policy)


def _signed(body: bytes) -> bytes:
    return policies.sign_body(body.decode("utf-8", "replace").encode(), world().root)


def _check_types(policy: Policy) -> None:
    assert isinstance(policy.org, str) and type(policy.version) is int and type(policy.epoch) is int
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in {**policy.members, **policy.sealed}.items())
    assert all(type(seq) is int for cutoffs in policy.revoked.values() for seq in cutoffs.values())
    assert all(isinstance(r, str) for r in policy.relays)
    for name in policies.DATED_RULES:  # every dated rule decodes and answers for every version
        rule = policy.rule(name)
        rule.current  # noqa: B018 - decodes
        for version in rule.history:
            rule.as_of(int(version))


def seeds() -> list[bytes]:
    w = world()
    body = json.loads(w.policy)["body"]
    data = json.loads(body)
    variants = [body, json.dumps({**data, "version": 1e400}), json.dumps({**data, "revoked": {"x": {"masters": 3}}}),
                json.dumps({**data, "sync_after": "2026-04-01", "relays": ["ws://r:1"]}),
                json.dumps({**data, "lock_until": "2026-03-31", "lock_until_history": {"2": "2026-03-31"},
                            "lock_until_held": {"2": {"vouchers/BR1/2026-03": {"ab": 3}}}})]
    return [w.policy, *(b"S" + v.encode() for v in variants)]
