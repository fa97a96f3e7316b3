"""Writes the seed corpus: each harness's valid encodings, one file per seed, under DIR/NAME/."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from fuzz.harnesses import NAMES, harness


def write(where: Path, names: tuple[str, ...] = NAMES) -> None:
    for name in names:
        folder = where / name
        folder.mkdir(parents=True, exist_ok=True)
        for seed in harness(name).seeds():
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "corpus")
