"""README.md and docs/: a short manual whose links resolve and whose commands name real flags.

The README is the user's manual, `docs/` one page per topic, dated figures once in docs/measurements.md
(DESIGN.md, "Where words about the tool live"). What can rot silently is checked here: a link or an
anchor to a heading that moved, a flag a page shows that the CLI no longer has, a README growing back
into a lab notebook.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MEASUREMENTS = ROOT / "docs" / "measurements.md"
README_MAX_LINES = 320

FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", flags=re.S | re.M)  # indented in a list too
INLINE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.M)
ISSUE = re.compile(r"\bissues?\s*#?\d+", flags=re.I)


def pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def page_ids() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in pages()]


def prose(text: str) -> str:
    """The text with its fenced code blocks blanked (lines kept, so nothing merges across a block)."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the text as rendered, lower case, punctuation dropped, spaces
    to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[*`]", "", text)  # emphasis and code marks are not rendered
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor on the page, duplicates numbered as GitHub does (-1, -2 ...)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def is_relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.I)


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def broken_links(path: Path) -> list[str]:
    bad = []
    for target in links(path):
        if not is_relative(target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no file {shown(dest)}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with anchor #{anchor} in {shown(dest)}")
    return bad


# --- the commands a page shows ---------------------------------------------------------------------------
SEARCH, TRAINER = "python search.py", "python -m trainer"


def command_lines(text: str) -> list[str]:
    """Every `python search.py ...` / `python -m trainer ...` command a page shows: the lines of its code
    blocks (continuations joined) and its inline code spans (which may wrap across a line)."""
    found = []
    for block in FENCE.finditer(text):
        body = block.group(0).split("\n", 1)[1].rsplit("\n", 1)[0]
        body = re.sub(r"\\\n\s*", " ", body)
        found += [line for line in body.splitlines() if SEARCH in line or TRAINER in line]
    for span in INLINE.findall(prose(text)):
        if SEARCH in span or TRAINER in span:
            found.append(" ".join(span.split()))
    return found


def commands(line: str) -> list[tuple[str, list[str]]]:
    """(program, its flags) for each search / trainer command in the line, its comment dropped and a
    quoted argument (a --command template, a JSON line) kept whole, as a shell would."""
    line = line.replace("...", " ")
    try:
        words = shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: read the words as they stand
        words = line.split()
    out: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(words):
        if words[i].endswith("python") and words[i + 1 : i + 2] == ["search.py"]:
            out.append((SEARCH, []))
            i += 2
            continue
        if words[i].endswith("python") and words[i + 1 : i + 3] == ["-m", "trainer"]:
            out.append((TRAINER, []))
            i += 3
            continue
        if words[i] in ("&&", "||", "|", ";"):
            out.append(("", []))
        elif out and words[i].startswith("--") and len(words[i]) > 2:
            out[-1][1].append(words[i].split("=", 1)[0])
        i += 1
    return [(prog, flags) for prog, flags in out if prog]


@cache
def help_flags(program: str) -> frozenset[str]:
    argv = (
        [sys.executable, "search.py", "--help"]
        if program == SEARCH
        else [sys.executable, "-m", "trainer", "--help"]
    )
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(argv[1:])} failed: {done.stderr[-2000:]}"
    flags = frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", done.stdout))
    assert "--help" in flags, done.stdout
    return flags


def unknown_flags(text: str) -> list[str]:
    bad = []
    for line in command_lines(text):
        for program, flags in commands(line):
            known = help_flags(program)
            # --train-best hands every flag search.py does not know to the trainer
            passes_on = program == SEARCH and "--train-best" in flags
            for flag in flags:
                if flag in known or (passes_on and flag in help_flags(TRAINER)):
                    continue
                bad.append(f"{flag} (not in `{program} --help`): {line}")
    return bad


# --- the tests -------------------------------------------------------------------------------------------
def test_readme_is_a_short_manual() -> None:
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, (
        f"README.md has {n} lines (at most {README_MAX_LINES}): move detail to docs/"
    )


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_every_relative_link_resolves(page: Path) -> None:
    assert not broken_links(page), "\n".join(broken_links(page))


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_every_flag_a_page_shows_exists(page: Path) -> None:
    bad = unknown_flags(page.read_text(encoding="utf-8"))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("page", pages(), ids=page_ids())
def test_no_issue_numbers(page: Path) -> None:
    hits = ISSUE.findall(page.read_text(encoding="utf-8"))
    assert not hits, f"{shown(page)} names {hits}: say what, not which ticket"


def test_measurements_page_exists_and_readme_links_it() -> None:
    assert MEASUREMENTS.is_file()
    assert any(t.partition("#")[0] == "docs/measurements.md" for t in links(README))


# --- the checks themselves fail on a real violation ------------------------------------------------------
def test_the_checks_catch_what_they_are_for(tmp_path: Path) -> None:
    assert unknown_flags("```sh\npython search.py --study x --no-such-flag 3   # a comment --neither\n```")
    assert unknown_flags("run `python -m trainer --preset f.json --bogus` then")
    assert unknown_flags("wrapped `python search.py --study\n  stability-quick --bogus-flag`")
    assert not unknown_flags('```sh\npython search.py --study t --command "python train.py --lr {lr}"\n```')
    assert not unknown_flags("`python search.py --study q --train-best --epochs 100 --batch-size 16`")
    assert unknown_flags("`python search.py --study q --epochs 100`")  # without --train-best: not search's
    assert ISSUE.search("since issue 18") and ISSUE.search("see Issue #7") and not ISSUE.search("an issue")
    page = tmp_path / "p.md"
    page.write_text(
        "# A page: `the` title\n\n## Why (really)?\n\n[a](p.md#a-page-the-title) [b](#why-really)\n"
    )
    assert broken_links(page) == []
    page.write_text("# Title\n\n[a](missing.md) [b](#nowhere)\n")
    assert len(broken_links(page)) == 2
