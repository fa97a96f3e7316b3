"""Version vectors and change dependencies: {document: {author: highest sequence}}.

Below every layer (like `errors` and `canonical`): the books' changes, the entry format, the sync
conversation, the node's store and the relay all speak in them, and the relay must not depend on the
books or the node's store to do so.
"""

from __future__ import annotations

import json

from p2psync.canonical import loads
from p2psync.errors import InvalidInput

#: Version vectors: document -> author -> highest sequence number applied.
Deps = dict[str, dict[str, int]]


def encode_deps(deps: Deps) -> str:
    return json.dumps(deps, sort_keys=True, separators=(",", ":"))


def decode_deps(text: str) -> Deps:
    try:
        data = loads(text)
    except ValueError:
        raise InvalidInput("malformed dependencies: not JSON") from None
    return check_deps(data)


def check_deps(data: object) -> Deps:
    """`data` (parsed JSON) as dependencies, if it has their shape: {document: {author: sequence}}."""
    if not isinstance(data, dict) or not all(
        isinstance(doc, str)
        and isinstance(vec, dict)
        and all(isinstance(a, str) and isinstance(s, int) and not isinstance(s, bool) and s > 0 for a, s in vec.items())
        for doc, vec in data.items()
    ):
        raise InvalidInput("malformed dependencies: expected {document: {author: sequence}}")
    return data
