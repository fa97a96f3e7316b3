"""The fuzz harnesses by name: each module has `check(data: bytes)`, which raises on a defect, and
`seeds()`, valid encodings to start mutating from."""

from __future__ import annotations

import importlib
from types import ModuleType

NAMES = ("entry", "sync", "relay_auth", "certs", "policy", "invite", "enroll", "model", "importer", "control",
         "advert", "inbox", "relay", "hostile")


def harness(name: str) -> ModuleType:
    return importlib.import_module(f"fuzz.fuzz_{name}")
