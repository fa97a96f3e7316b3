"""Load on a real relay process: 200 authenticated member connections at once (one asyncio client in
this process, loopback only) while real nodes keep syncing through it, and a member that floods it
is throttled and then refused, with a reason, while every other member is still served."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from procs import (
    Fleet,
    RelayProcess,
    make_org,
    policy,
    post_here,
    setting,
    voucher_numbers,
    wait_converged,
)
from test_relay import Client, Creds, until
from websockets.exceptions import ConnectionClosed

from p2psync.node.home import KEYS_DIR, ROOT_KEY_FILE
from p2psync.protocol import entry
from p2psync.protocol.sync import MAX_ENTRIES_PER_BATCH
from p2psync.trust.certs import issue_node_cert, to_der
from p2psync.trust.keys import NodeKeys, load_root, unb64

pytestmark = pytest.mark.slow

MEMBERS = 200
WAIT = 60.0


@pytest.fixture
def relay_url(tmp_path: Path) -> Iterator[str]:
    relay = RelayProcess(tmp_path)
    yield relay.url
    relay.stop()


def members(head: Path, count: int) -> list[Creds]:
    """`count` branch identities certified by the head office's root, as its invites would make them."""
    root = load_root(head / KEYS_DIR / ROOT_KEY_FILE)
    root_der = unb64(setting(head, "root_cert"))
    root_cert = x509.load_der_x509_certificate(root_der)
    blob = setting(head, "policy").encode()
    body = policy(head)
    out = []
    for i in range(count):
        keys = NodeKeys.generate()
        cert = to_der(issue_node_cert(root, root_cert, keys.signing.public_key(), keys.sealing.public_key(), "BR1",
                                      "branch", 100 + i))
        out.append(Creds(keys.node_id, body["org"], "branch", root_der, cert, keys.signing, blob, body["version"]))
    return out


def from_head(client: Client, head_id: str) -> int:
    return sum(1 for blob in client.received if entry.peek(blob).author == head_id)


async def post(home: Path, count: int, narration: str) -> set[str]:
    return {await asyncio.to_thread(post_here, home, "receipt", "2026-04-02", "Cash", "Sales", f"{n + 1}.00",
                                    f"{narration} {n}") for n in range(count)}


def test_the_relay_serves_200_members_and_throttles_a_flooder_without_starving_them(
        tmp_path: Path, fleet: Fleet, relay_url: str) -> None:
    ho, br1 = make_org(tmp_path / "org", ("BR1",), relays=(relay_url,))
    fleet.start(ho)
    fleet.start(br1)
    head_id = setting(ho, "node_id")
    crowd_creds = members(ho, MEMBERS + 1)

    async def scenario() -> None:
        crowd: list[Client] = []
        for start in range(0, MEMBERS, 50):  # open them 50 at a time, all held open together
            crowd += await asyncio.gather(*(Client.open(relay_url, who) for who in crowd_creds[start:start + 50]))
        await asyncio.gather(*(client.wait_caught_up() for client in crowd))
        assert not any(client.closed or client.refused for client in crowd), "every member is admitted"
        base = [from_head(client, head_id) for client in crowd]

        # entries flow to all 200 (and to the real branch) while they are connected
        first = await post(ho, 3, "while 200 members are connected")
        await until(lambda: all(from_head(c, head_id) >= b + 3 for c, b in zip(crowd, base, strict=True)),
                    "HO's entries at all 200 members", WAIT)
        await asyncio.to_thread(wait_converged, ho, br1)
        assert first <= await asyncio.to_thread(voucher_numbers, br1)

        # one more member floods: full batches, as fast as it can, ignoring the acknowledgement window
        flooder = await Client.open(relay_url, crowd_creds[MEMBERS])
        flooder.conn.window = 1000
        junk = [b"junk %06d" % i for i in range(MAX_ENTRIES_PER_BATCH)]
        sent = 0
        with contextlib.suppress(ConnectionClosed):
            while not flooder.closed and sent < 40:
                await flooder.send(flooder.conn.entries(junk))
                sent += 1
        during = await post(ho, 3, "while a member floods")  # the others are served all the while
        reason = await flooder.wait_refused()
        print(f"flooder: {sent} batches of {len(junk)} sent, {len(flooder.acks)} acknowledged, refused: {reason}")
        assert "rate limit" in reason
        assert len(flooder.acks) < sent, "the flooder's batches were held back, not acknowledged at its pace"
        await until(lambda: all(from_head(c, head_id) >= b + 6 for c, b in zip(crowd, base, strict=True)),
                    "HO's entries at all 200 members during the flood", WAIT)
        await asyncio.to_thread(wait_converged, ho, br1)
        assert during <= await asyncio.to_thread(voucher_numbers, br1)
        assert not any(client.closed for client in crowd), "no other member was dropped"
        for client in crowd:
            await client.close()

    asyncio.run(asyncio.wait_for(scenario(), 240))
