"""The README stays a front door, and every relative link in the docs leads somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# [text](target) outside code; images too.  Targets with a scheme or starting with # are checked below.
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_FENCE = re.compile(r"^(```|~~~)")


def _prose(path: Path) -> list[str]:
    """The page's lines outside fenced code blocks, with inline code removed."""
    lines, fenced = [], False
    for line in path.read_text().splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", "", line))
    return lines


def _slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    fenced = False
    for line in path.read_text().splitlines():
        if _FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced or not (m := re.match(r"^#{1,6} (.+)$", line)):
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def test_the_readme_is_a_front_door_of_at_most_250_lines() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move reference material to docs/"


def _links() -> list[tuple[Path, str]]:
    out = []
    for page in PAGES:
        for line in _prose(page):
            out += [(page, target) for target in _LINK.findall(line)]
    return out


@pytest.mark.parametrize(("page", "target"), _links(),
                         ids=[f"{p.relative_to(REPO)}->{t}" for p, t in _links()])
def test_every_relative_link_leads_to_a_file_and_anchor(page: Path, target: str) -> None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target):
        return  # http(s), mailto: not ours to check offline
    path_part, _, anchor = target.partition("#")
    dest = (page.parent / path_part).resolve() if path_part else page
    assert dest.exists(), f"{page.relative_to(REPO)}: link to {target}: no such file"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), f"{page.relative_to(REPO)}: link to {target}: no such heading"


def test_every_reference_page_is_one_click_from_the_readme() -> None:
    readme = "\n".join(_prose(REPO / "README.md"))
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name}" in readme, f"docs/{page.name} is not linked from README.md"
