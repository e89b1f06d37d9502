"""The README and docs/ as a newcomer follows them: every relative link opens a file that exists (and
a heading that exists, for `file.md#heading`), and every `make <target>` they name is in the Makefile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
MAKE = re.compile(r"(?:`|^)make ([a-z][a-z0-9-]*)", re.MULTILINE)  # in code: `make up`, or a command line


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in markdown.read_text().splitlines():
        if heading := re.match(r"#{1,6} (.+)", line):
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def relative_links(markdown: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", markdown.read_text(), flags=re.DOTALL)  # code is not a link
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_readme_links_resolve(markdown: Path) -> None:
    broken = []
    for target in relative_links(markdown):
        path, _, anchor = target.partition("#")
        file = (markdown.parent / path).resolve() if path else markdown
        if not file.exists():
            broken.append(
                f"{target}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}"
            )
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, f"{markdown.relative_to(ROOT)}: " + "; ".join(broken)


def test_readme_names_only_make_targets_that_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), flags=re.MULTILINE))
    for markdown in DOCS:
        named = set(MAKE.findall(markdown.read_text()))
        assert named <= targets, (
            f"{markdown.relative_to(ROOT)} names make {sorted(named - targets)}: not in the Makefile"
        )


def test_readme_is_a_quick_start() -> None:
    """About two screens: the set-up commands, CI's commands, the links to every reader's doc."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 90, "README.md is a quick start: detail goes to docs/"
    for command in ("make up", "make test", "make lint", "make e2e"):  # .ci/run runs the README's commands
        assert command in readme, command
    for doc in ("docs/workshop.md", "docs/operations.md", "docs/architecture.md", "docs/testing.md"):
        assert f"]({doc}" in readme, doc
    assert "## Team access" in readme and "docs/operations.md#team-access-and-threat-model" in readme


@pytest.mark.parametrize(
    "name", ["workshop.md", "operations.md", "architecture.md", "testing.md", "training.md", "kubernetes.md"]
)
def test_each_readers_doc_ends_with_verify_and_troubleshooting(name: str) -> None:
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / name).read_text(), flags=re.MULTILINE)
    markdown = ROOT / "docs" / name
    assert headings[-2:] == ["Verify", "Troubleshooting"], f"{markdown.name} ends with {headings[-2:]}"
