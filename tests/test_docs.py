"""The README and docs/ stay self-contained: every relative link and image resolves in the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)[^)]*\)")


def relative_links(path: Path) -> list[str]:
    """Link targets of a markdown file that point into the repository (no URLs, no anchors)."""
    out = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        out.append(target.split("#", 1)[0])
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    missing = [t for t in relative_links(doc) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.name} links to missing files: {missing}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_doc_points_outside_the_repository(doc):
    text = doc.read_text()
    assert "../shared" not in text and "shared/spec" not in text
    outside = [t for t in relative_links(doc) if not (doc.parent / t).resolve().is_relative_to(ROOT)]
    assert not outside, outside


def test_the_link_finder_sees_links_and_images(tmp_path):
    f = tmp_path / "x.md"
    f.write_text("see [a](docs/a.md#part) and ![img](docs/i.png \"title\") and [web](https://x.org) [in](#top)")
    assert relative_links(f) == ["docs/a.md", "docs/i.png"]


def test_configuration_reference_is_complete_and_current():
    from experiments import config_reference as ref

    assert ref.missing_meanings() == [], "add a meaning to experiments/config_reference.py MEANINGS"
    assert ref.stale_meanings() == [], "remove meanings of keys that no longer exist"
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == ref.render(), (
        "docs/configuration.md is out of date: python -m experiments.config_reference > docs/configuration.md")
