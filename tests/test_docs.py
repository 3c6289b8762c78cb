"""Citations of docs/method.md and docs/design.md point at existing headings.

Code cites the method by section number ("docs/method.md §3.1") and the
design decisions by heading ("docs/design.md, 'Weight decay'": the whole
heading, or its part before the first colon). Renumbering a section or
renaming a heading without updating its citations fails here.

Scanned: every .py and .ipynb file of the repository but this one (where
"§" only ever means a section of docs/method.md) and every .md file (where
only the "§" numbers right after a mention of method.md count, except in
method.md itself).
"""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTIONS_DOC = ROOT / "docs" / "method.md"
DECISIONS_DOC = ROOT / "docs" / "design.md"
SKIPPED_DIRS = {"__pycache__", "node_modules", "build", "dist"}

SECTION = re.compile(r"§\s*(\d+(?:\.\d+)*)")
# "method.md" followed by a run of section numbers, separators and items:
# "method.md §2.4, §7.1", "method.md §11, item 5", "method.md §4.2, §4.4".
CITATION_RUN = re.compile(
    r"method\.md((?:[\s#,;]|and\b|items?\s+[\d\u2013-]+|§\s*\d+(?:\.\d+)*)*)")
# "design.md, 'A'" or "design.md, 'A' and 'B'" (across lines and comments).
DESIGN_RUN = re.compile(
    r"design\.md,\s*('[^']+'(?:(?:\s|#)*(?:,|and)(?:\s|#)*'[^']+')*)")
QUOTED = re.compile(r"'([^']+)'")


def method_sections(text: str) -> set[str]:
  """Section numbers of the headings of method.md: '3', '3.1', ..."""
  return set(re.findall(r"^#{2,3}\s+(\d+(?:\.\d+)?)\.?\s", text, re.M))


def design_headings(text: str) -> set[str]:
  """Names a citation may use: each '## ' heading of design.md, whole and
  up to its first colon."""
  names = set()
  for heading in re.findall(r"^##\s+(.+?)\s*$", text, re.M):
    names.add(heading)
    names.add(heading.split(":")[0].strip())
  return names


def _normalise(name: str) -> str:
  """A cited name with line breaks and comment markers collapsed."""
  return " ".join(name.replace("#", " ").split())


def cited_sections(text: str, every_section: bool) -> list[str]:
  """'§N' numbers cited in `text`: all of them, or (Markdown) only those in
  a run right after "method.md"."""
  if every_section:
    return SECTION.findall(text)
  return [s for run in CITATION_RUN.findall(text) for s in SECTION.findall(run)]


def cited_design_headings(text: str) -> list[str]:
  """Heading names cited as "design.md, '...'" in `text`."""
  return [_normalise(name) for run in DESIGN_RUN.findall(text)
          for name in QUOTED.findall(run)]


def broken_citations(text: str, every_section: bool, sections: set[str],
                     headings: set[str]) -> list[str]:
  """Citations in `text` that name no section of method.md or no heading of
  design.md."""
  broken = [f"§{s}" for s in cited_sections(text, every_section)
            if s not in sections]
  broken += [f"design.md, '{h}'" for h in cited_design_headings(text)
             if h not in headings]
  return broken


def _repository_files():
  for path in sorted(ROOT.rglob("*")):
    parts = path.relative_to(ROOT).parts
    if any(p.startswith(".") or p in SKIPPED_DIRS for p in parts[:-1]):
      continue
    # This file holds deliberately wrong citations for the checker's test.
    if path.is_file() and path.suffix in (".py", ".ipynb", ".md") and (
        path != pathlib.Path(__file__).resolve()):
      yield path


@pytest.fixture(scope="module")
def targets():
  return (method_sections(SECTIONS_DOC.read_text(encoding="utf-8")),
          design_headings(DECISIONS_DOC.read_text(encoding="utf-8")))


def test_docs_have_numbered_sections_and_headings(targets):
  sections, headings = targets
  assert {"1", "3.1", "6.1", "8.4", "10.1"} <= sections
  assert {"Layering", "Weight decay", "Precision"} <= headings


def test_every_citation_names_an_existing_heading(targets):
  sections, headings = targets
  problems, checked = [], 0
  for path in _repository_files():
    text = path.read_text(encoding="utf-8", errors="replace")
    every_section = path.suffix != ".md" or path == SECTIONS_DOC
    checked += len(cited_sections(text, every_section))
    checked += len(cited_design_headings(text))
    problems += [f"{path.relative_to(ROOT)}: {c}" for c in
                 broken_citations(text, every_section, sections, headings)]
  assert checked > 50, f"only {checked} citations found; is the scan broken?"
  assert not problems, (
      "citations of docs/method.md / docs/design.md that match no heading "
      "(fix the citation or the heading):\n  " + "\n  ".join(problems))


def test_checker_reports_wrong_citations(targets):
  sections, headings = targets
  code = ('"""See docs/method.md §3.1, §99.9 and docs/design.md,\n'
          "'Weight decay' and 'No such decision'.\"\"\"\n"
          "# docs/method.md §3.7\n")
  assert broken_citations(code, True, sections, headings) == [
      "§99.9", "§3.7", "design.md, 'No such decision'"]
  markdown = "Like §3.9 in the paper; see method.md §2.1, §42.\n"
  assert broken_citations(markdown, False, sections, headings) == ["§42"]
