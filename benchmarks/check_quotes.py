"""List the double-quoted phrases of the presets and method docstrings that their paper does not contain.

    python benchmarks/check_quotes.py ../shared/papers      # prints each miss, then a count line

A file's seed paper comes from its name (``imclr_*`` / ``pimodel`` -> ImCLR, ``spcl*`` -> SPCL,
``simclic*`` -> SimCLIC, ``simclr*`` -> SimCLR; see :data:`SEEDS`). Checked: the comments of
``configs/{experiment,method,augment,method_optimizer,method_scheduler}/*.yaml`` and the
docstrings of ``methods/*.py``. A phrase is a double-quoted run of at least
:data:`MIN_WORDS` words; one whose preceding text names another source (:data:`OTHER_SOURCES`,
e.g. ``[O18``, ``Oliver``, ``code``) is not attributed to the seed paper and is skipped.
Matching ignores case, whitespace and the kind of dash; ``...`` and ``[bracketed]`` insertions
split a quote into pieces that must each be found. A tool, not a test: tests never read the
papers (tests/test_check_quotes.py runs the matcher on an inline text).
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

#: File-name keyword -> paper files (in the papers folder); the first keyword found in a name wins.
SEEDS: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("simclrv2", ()),  # SimCLRv2 (Chen et al. 2020b) is not a seed paper
    ("simclic", ("003_046944b2dd08b942.txt",)),
    ("simclr", ("002_390012da5614c2d4.txt",)),
    ("spcl", ("004_5155be0bdc6a53e1.txt",)),
    ("imclr", ("000_dda0ebe99f4c033a.txt", "001_d4e18b01ab94bcf9.txt")),
    ("pimodel", ("000_dda0ebe99f4c033a.txt", "001_d4e18b01ab94bcf9.txt")),
)
#: Shorter quotes are labels (``"supervised"``), not quotations.
MIN_WORDS = 3
#: Text just before a quote that attributes it to a source other than the seed paper.
OTHER_SOURCES = ("[o18", "oliver", "laine", "code", "keras", "torchvision", "github", "lib/", "readme", "slides'",
                 "issue", "solo-learn", "lightly", "moco", "simsiam", "byol", "swav", "authors'", "repository",
                 "full paper")  # "full paper": a seed paper's text our copy lacks (SimCLR's beyond the slides)
#: How many characters before a quote are searched for :data:`OTHER_SOURCES`.
LOOKBEHIND = 60
YAML_DIRS = ("experiment", "method", "augment", "method_optimizer", "method_scheduler")

_DASHES = re.compile(r"[\u2010\u2011\u2012\u2013\u2014\u2015\u2212-]")
_QUOTE = re.compile(r"[\"\u201c\u201d]([^\"\u201c\u201d]{1,800}?)[\"\u201c\u201d]", re.S)
_SPLIT = re.compile(r"\.\.\.|\u2026|\[[^\]]*\]")


def normalise(text: str) -> str:
    """Lower case, LaTeX ``$`` dropped, every dash ``-`` with no space around it, curly apostrophes straight, runs of
    whitespace one space (``"Π -model"`` and ``"π‑model"`` both become ``"π-model"``)."""
    text = _DASHES.sub("-", text.lower().replace("$", "")).replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\s+", " ", text)
    return re.sub(r" ?- ?", "-", text).strip()


def quotes_in(text: str) -> List[Tuple[int, str, str]]:
    """``(line, phrase, text before it)`` for each double-quoted phrase of >= MIN_WORDS words."""
    found = []
    for match in _QUOTE.finditer(text):
        phrase = match.group(1)
        if len(phrase.split()) >= MIN_WORDS and "our choice" not in phrase.lower():  # our own labels
            before = text[max(0, match.start() - LOOKBEHIND):match.start()]
            found.append((text.count("\n", 0, match.start()) + 1, phrase, before))
    return found


def is_in(phrase: str, paper: str) -> bool:
    """Every piece of ``phrase`` (split at ``...`` and ``[...]``) occurs in the normalised ``paper``."""
    pieces = [normalise(p).strip(" .,;:") for p in _SPLIT.split(phrase)]
    return all(piece in paper for piece in pieces if piece)


def attributed(before: str) -> bool:
    """True unless the text before the quote names another source."""
    low = before.lower()
    return not any(marker in low for marker in OTHER_SOURCES)


def yaml_comments(text: str) -> str:
    """The comment part of each line (after the first ``#`` outside a quoted value), lines kept."""
    lines = []
    for line in text.splitlines():
        code = re.sub(r"\"[^\"]*\"|'[^']*'", lambda m: "x" * len(m.group(0)), line)  # hide quoted values
        cut = code.find("#")
        lines.append(line[cut + 1:] if cut >= 0 else "")
    return "\n".join(lines)


def docstrings(text: str) -> str:
    """Module, class and function docstrings of a Python file, at their own lines (others blank)."""
    lines = [""] * (text.count("\n") + 1)
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                start = first.lineno - 1
                for i, line in enumerate(first.value.value.splitlines()):
                    if start + i < len(lines):
                        lines[start + i] = line
    return "\n".join(lines)


def seed_of(name: str) -> Tuple[str, ...]:
    """The paper files of the first :data:`SEEDS` keyword in ``name`` (empty: no seed paper)."""
    low = name.lower()
    return next((papers for key, papers in SEEDS if key in low), ())


def misses(sources: Iterable[Tuple[str, str]], papers: Dict[str, str]) -> Tuple[int, List[str]]:
    """Checks ``(name, text to scan)`` pairs against ``papers`` (file name -> raw text).

    Returns:
        The number of attributed quotes checked and one ``name:line: "phrase" (papers)`` per miss.
    """
    norm = {name: normalise(text) for name, text in papers.items()}
    checked, out = 0, []
    for name, text in sources:
        seeds = [s for s in seed_of(Path(name).name) if s in norm]
        if not seeds:
            continue
        for line, phrase, before in quotes_in(text):
            if not attributed(before):
                continue
            checked += 1
            if not any(is_in(phrase, norm[s]) for s in seeds):
                out.append(f"{name}:{line}: \"{' '.join(phrase.split())}\" not in {', '.join(seeds)}")
    return checked, out


def project_sources(root: Path) -> List[Tuple[str, str]]:
    """``(relative path, comments or docstrings)`` of every checked file under ``root``."""
    sources = []
    for folder in YAML_DIRS:
        for path in sorted((root / "configs" / folder).glob("*.yaml")):
            sources.append((str(path.relative_to(root)), yaml_comments(path.read_text(encoding="utf-8"))))
    for path in sorted((root / "methods").glob("*.py")):
        sources.append((str(path.relative_to(root)), docstrings(path.read_text(encoding="utf-8"))))
    return sources


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("papers", type=Path, help="folder with the papers' text files")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the project")
    args = parser.parse_args(argv)
    papers = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(args.papers.glob("*.txt"))}
    if not papers:
        print(f"no *.txt papers in {args.papers}", file=sys.stderr)
        return 2
    checked, out = misses(project_sources(args.root), papers)
    for line in out:
        print(line)
    print(f"{checked} quoted phrases attributed to a seed paper checked, {len(out)} not found")
    return 1 if out else 0


if __name__ == "__main__":
    sys.exit(main())
