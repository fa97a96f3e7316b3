"""The import rules of docs/architecture.md, checked on the source: a relay that imported the books or
the node's store would drag them (and their bugs and dependencies) into a server that must know
nothing of the books, and the modules below every layer must stay below them."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import p2psync

PACKAGE = Path(p2psync.__file__).parent
LAYERED = ("books", "trust", "protocol", "store", "net", "relay", "node", "cli", "web")


def imported(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in `path` (a module under `root`), relative ones
    resolved, including `from p2psync import books` (which names the package `p2psync.books`)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            yield node.lineno, base
            yield from ((node.lineno, f"{base}.{alias.name}") for alias in node.names)


def offending(paths: list[Path], forbidden: tuple[str, ...], root: Path = PACKAGE.parent) -> list[str]:
    """Each import of a module in (or under) `forbidden`, as 'file:line imports module'."""
    found = []
    for path in paths:
        for line, module in imported(path, root):
            if any(module == name or module.startswith(name + ".") for name in forbidden):
                found.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(set(found))


def test_the_relay_imports_nothing_from_the_books_or_the_node_store() -> None:
    modules = sorted((PACKAGE / "relay").rglob("*.py"))
    assert modules, "no relay modules found"
    assert offending(modules, ("p2psync.books", "p2psync.store")) == []


@pytest.mark.parametrize("module", ["errors.py", "canonical.py", "deps.py", "sqlite.py"])
def test_the_modules_below_every_layer_import_no_layer(module: str) -> None:
    assert offending([PACKAGE / module], tuple(f"p2psync.{name}" for name in LAYERED)) == []


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    """The rule would pass vacuously if `imported` missed a form; a planted module proves it does not."""
    planted = tmp_path / "p2psync" / "relay" / "planted.py"
    planted.parent.mkdir(parents=True)
    planted.write_text("import p2psync.store.db\nfrom p2psync import books\nfrom ..store import log\n"
                       "from p2psync.books.change import Change\nfrom p2psync.deps import Deps\n"
                       "from . import server\n")
    found = offending([planted], ("p2psync.books", "p2psync.store"), tmp_path)
    assert {int(line.split(":")[1].split()[0]) for line in found} == {1, 2, 3, 4}
