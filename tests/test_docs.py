"""The README and docs/: every relative link leads to a file the repository holds, and to a heading there;
every Markdown file named in code (`bench/README.md`) is one the repository holds."""

from __future__ import annotations

import re
import subprocess

from helpers import ROOT

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")
NAMED_DOCUMENT = re.compile(r"`([\w./-]+\.md)`")


def documents() -> list:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "examples").glob("*/README.md")), ROOT / "bench" / "README.md"]


def links(markdown: str) -> list[str]:
    """Return the link targets of a Markdown text, outside code blocks and code spans."""
    prose = CODE.sub("", FENCE.sub("", markdown))
    return LINK.findall(prose)


def heading_slug(heading: str) -> str:
    """Return the anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {heading_slug(line.lstrip("#")) for line in FENCE.sub("", markdown).splitlines() if line.startswith("#")}


def files_the_repository_holds() -> set[str] | None:
    """Return the tracked paths when this is a git checkout (a file ignored by git is not the repository's)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None  # an unpacked archive: what is on disk is what the repository holds
    return set(listed.stdout.decode().split("\0")) - {""}


def test_heading_slugs_are_githubs():
    assert heading_slug(" config.json while the API runs") == "configjson-while-the-api-runs"
    assert heading_slug("The walk-through's retrain, line by line") == "the-walk-throughs-retrain-line-by-line"
    assert links("[a](x.md) `[b](y.md)`\n```\n[c](z.md)\n```\n[d](https://example.com)") == ["x.md", "https://example.com"]


def test_every_relative_link_points_to_a_file_the_repository_holds():
    tracked = files_the_repository_holds()
    broken = []
    for document in documents():
        for target in links(document.read_text(encoding="utf-8")):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # https:, mailto:
            path_part, _, fragment = target.partition("#")
            destination = (document.parent / path_part).resolve() if path_part else document
            relative = destination.relative_to(ROOT).as_posix() if destination.is_relative_to(ROOT) else None
            where = f"{document.relative_to(ROOT)}: {target}"
            if relative is None or not destination.exists():
                broken.append(f"{where}: no such file in the repository")
            elif tracked is not None and destination.is_file() and relative not in tracked:
                broken.append(f"{where}: not a file the repository holds (untracked or ignored)")
            elif fragment and destination.suffix == ".md" and fragment not in anchors(destination.read_text()):
                broken.append(f"{where}: no heading #{fragment} there")
    assert broken == []


def test_every_markdown_file_named_in_the_docs_is_in_the_repository():
    """The README once sent readers to `DESIGN.md`, a file no clone holds."""
    missing = [
        f"{document.relative_to(ROOT)}: {name}"
        for document in documents()
        for name in NAMED_DOCUMENT.findall(document.read_text(encoding="utf-8"))
        if not (ROOT / name).is_file() and not (document.parent / name).is_file()
    ]
    assert missing == []
