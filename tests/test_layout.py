"""The rooms and the arrows between them (README, "Layout"), checked on the source: which package may
import which. A dependency against an arrow fails here, with the file and the import that broke it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions count too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


# room -> the prefixes its modules must never import
FORBIDDEN = {
    "common": ("tts_model", "trainer", "space", "studies", "search", "optuna"),
    "tts_model": ("trainer", "space", "studies", "search", "optuna"),
    "trainer": ("space", "studies", "search", "optuna"),
    "space": ("studies", "search", "trainer.loop"),
    "studies/evidence": ("studies.execution", "search"),
    "studies": ("search",),
}


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_no_import_goes_against_the_arrows(room: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files(room)
        for name in sorted(imports(path))
        if any(name == p or name.startswith(p + ".") for p in FORBIDDEN[room])
    ]
    assert not bad, bad


def test_the_definition_room_does_not_reach_into_execution_or_evidence() -> None:
    """studies/*.py (definitions, binding, scoring, pruner, record, paths) are read by both other rooms."""
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "studies").glob("*.py"))
        for name in sorted(imports(path))
        if name.startswith(("studies.execution", "studies.evidence"))
    ]
    assert not bad, bad


def test_a_verdict_word_is_decided_in_one_place() -> None:
    """Only the judge turns a run's history into an outcome word: no other module builds a
    "diverged:" outcome or picks between stable / unaligned / no-stop itself."""
    deciders = [
        path.relative_to(ROOT).as_posix()
        for folder in ("trainer", "studies")
        for path in files(folder)
        if "def finished_verdict" in path.read_text() or "def diverged_outcome" in path.read_text()
    ]
    assert deciders == ["trainer/judge.py"]
