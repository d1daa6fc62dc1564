"""Every relative link in README.md and docs/*.md leads to a file in the repository, so a reader
of a clone (or of the repository's web view) never follows a link into nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(document: Path) -> list[str]:
    """Link targets that are neither absolute URLs nor anchors within the same page."""
    targets = LINK.findall(document.read_text())
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_relative_link_leads_to_a_file_in_the_repository(document: Path) -> None:
    broken = [
        target
        for target in relative_links(document)
        if not (target_path := (document.parent / target.split("#")[0]).resolve()).exists()
        or not target_path.is_relative_to(ROOT)
    ]
    assert broken == []


def test_links_are_found() -> None:
    assert "docs/reference.md" in relative_links(ROOT / "README.md")
