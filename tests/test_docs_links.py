"""Every relative link of the README and its guides leads somewhere.

The README is a front page with guides behind it in `docs/`; a guide
moved or a heading renamed must not leave a dead link. This reads
README.md, every `docs/**/*.md`, CHANGELOG.md and benchmarks/README.md,
finds their markdown links and images (`[text](target)`,
`![alt](target)`, `[text][ref]` with its `[ref]: target`) and their HTML
`<img src>` and `<a href>`, and checks that each relative target exists,
resolved against the file that links it, and that its `#anchor` names a
heading of the target as GitHub slugs it. Web and mail links are not
followed. Links inside code (fenced blocks, inline spans) are not links.
"""

import collections
import pathlib
import re
import urllib.parse

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
README_MAX_LINES = 300
MIN_GUIDES = 4

SKIPPED_SCHEMES = ("http:", "https:", "mailto:")
# Any other scheme (`ftp:`, `gs:`) or a host (`//host/...`) is no file here.
SCHEME = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)
FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
# A code span ends with its run of backticks, within its paragraph.
INLINE_CODE = re.compile(r"(`+)(?:(?!\1)(?!\n[ \t]*\n).)+?\1", re.S)
# `[text](target)` or `![alt](target)`, the text holding at most one level
# of brackets (an image inside a link), the target bare or in <...>, with
# an optional "title".
INLINE_LINK = re.compile(
    r"(!?)\[((?:[^\[\]]|\[[^\[\]]*\])*)\]"
    r"\(\s*(<[^>\n]*>|[^)\s]*)(?:\s+(?:\"[^\"]*\"|'[^']*'|\([^)]*\)))?\s*\)"
)
REFERENCE_LINK = re.compile(
    r"(?<![\]\\])\[((?:[^\[\]]|\[[^\[\]]*\])+)\]\[([^\]]*)\]"
)
REFERENCE_DEFINITION = re.compile(
    r"^ {0,3}\[([^\]]+)\]:\s*(<[^>\n]*>|\S+)", re.M
)
HTML_TARGET = re.compile(
    r"<(?:img|a|source)\b[^>]*?\b(?:src|href)\s*=\s*[\"']([^\"']*)[\"']",
    re.I,
)
HTML_ANCHOR = re.compile(
    r"<[a-z]+\b[^>]*?\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", re.I
)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
LINE_ANCHOR = re.compile(r"^L(\d+)(?:-L(\d+))?$")

Link = collections.namedtuple("Link", ["line", "target"])


def documents():
    """The markdown files whose links are checked."""
    paths = [REPO / "README.md"]
    paths += sorted((REPO / "docs").rglob("*.md"))
    paths += [
        path
        for path in (REPO / "CHANGELOG.md", REPO / "benchmarks" / "README.md")
        if path.is_file()
    ]
    return paths


def without_code(text):
    """The markdown with its code blanked out, line numbers kept.

    Fenced blocks become empty lines and inline code spans become spaces
    (newlines inside a span are kept), so a link's line number is the
    line it is on.
    """
    out = []
    fence = None
    for line in text.split("\n"):
        match = FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                out.append("")
                continue
            out.append(line)
        else:
            if (
                match
                and match.group(1)[0] == fence[0]
                and len(match.group(1)) >= len(fence)
                and not line.strip()[len(match.group(1)) :].strip()
            ):
                fence = None
            out.append("")
    prose = "\n".join(out)
    return INLINE_CODE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose)


def slug(heading):
    """GitHub's anchor for a heading's text.

    Markdown is read as GitHub renders it (a link is its text, emphasis
    and code marks go); then lowercase, every character that is not a
    letter, digit, space, '-' or '_' dropped, and each space made a '-'.

    Args:
        heading: str. The heading's markdown, without its '#' marks.

    Returns:
        str. The anchor, without '#'.
    """
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text):
    """Every anchor a markdown file defines: its headings' and HTML ids.

    Headings inside fenced code are not headings. A repeated heading gets
    GitHub's suffixes: `-1`, `-2`, ...
    """
    seen = collections.Counter()
    found = set()
    for line in without_code(text).split("\n"):
        match = ATX_HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        name = base if not seen[base] else f"{base}-{seen[base]}"
        seen[base] += 1
        found.add(name)
    found.update(HTML_ANCHOR.findall(without_code(text)))
    return found


def links(text):
    """The link targets of a markdown text, with their line numbers."""
    prose = without_code(text)

    def line_of(offset):
        return prose.count("\n", 0, offset) + 1

    found = []

    def scan(chunk, start):
        for match in INLINE_LINK.finditer(chunk):
            target = match.group(3)
            if target.startswith("<") and target.endswith(">"):
                target = target[1:-1]
            found.append(Link(line_of(start + match.start()), target))
            # A link whose text is an image links twice.
            scan(match.group(2), start + match.start(2))

    scan(prose, 0)
    definitions = {
        name.strip().lower(): target.strip("<>")
        for name, target in REFERENCE_DEFINITION.findall(prose)
    }
    for match in REFERENCE_DEFINITION.finditer(prose):
        found.append(Link(line_of(match.start()), match.group(2).strip("<>")))
    for match in REFERENCE_LINK.finditer(prose):
        name = (match.group(2) or match.group(1)).strip().lower()
        if name not in definitions:
            found.append(Link(line_of(match.start()), f"[{name}] (undefined)"))
    for match in HTML_TARGET.finditer(prose):
        found.append(Link(line_of(match.start()), match.group(1)))
    return found


def problem(source, target, root=REPO):
    """Why a link from `source` to `target` is broken, or None.

    Args:
        source: pathlib.Path. The markdown file the link is in.
        target: str. The link's target as written.
        root: pathlib.Path. The repository: a target outside it is broken.

    Returns:
        None when the target resolves (or is a web or mail link), else a
        str saying what is wrong.
    """
    if target.endswith("(undefined)"):
        return "reference link with no definition"
    if target.lower().startswith(SKIPPED_SCHEMES):
        return None
    if SCHEME.match(target):
        return "not a relative link (only http, https and mailto are skipped)"
    if not target:
        return "empty target"
    path_part, _, anchor = target.partition("#")
    path_part = urllib.parse.unquote(path_part.split("?")[0])
    anchor = urllib.parse.unquote(anchor)
    if path_part.startswith("/"):
        resolved = (root / path_part.lstrip("/")).resolve()
    elif path_part:
        resolved = (source.parent / path_part).resolve()
    else:
        resolved = source.resolve()
    if not resolved.is_relative_to(root.resolve()):
        return f"{path_part} lies outside the repository"
    if not resolved.exists():
        return f"{path_part} does not exist"
    if not anchor:
        return None
    if resolved.is_dir():
        return f"#{anchor} on a folder"
    text = resolved.read_text(encoding="utf-8", errors="replace")
    if resolved.suffix.lower() in (".md", ".markdown"):
        if anchor not in anchors(text):
            return f"{resolved.name} has no heading #{anchor}"
        return None
    match = LINE_ANCHOR.match(anchor)
    if match:
        last = int(match.group(2) or match.group(1))
        if last > text.count("\n") + 1:
            return f"{resolved.name} has no line {last}"
        return None
    return f"#{anchor} cannot be checked in {resolved.name}"


def broken_links(paths, root=REPO):
    """`file:line: target: why` for every broken link of the files."""
    broken = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for link in links(text):
            why = problem(path, link.target, root)
            if why:
                where = path.relative_to(root)
                broken.append(f"{where}:{link.line}: {link.target}: {why}")
    return broken


# ---------------------------------------------------------------- checker


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("The main job: `keras-pam run`", "the-main-job-keras-pam-run"),
        (
            "What the base perceives, and what a task's adapter gets out of it",
            "what-the-base-perceives-and-what-a-tasks-adapter-gets-out-of-it",
        ),
        ("Quickstart (CPU)", "quickstart-cpu"),
        ("Set-up: two commands", "set-up-two-commands"),
        (
            "1. One LoRA training step vs transformers + PEFT",
            "1-one-lora-training-step-vs-transformers--peft",
        ),
        (
            "Real widths: where `learn_task`'s host memory goes",
            "real-widths-where-learn_tasks-host-memory-goes",
        ),
        ("See [the guide](docs/x.md) now", "see-the-guide-now"),
        ("Mean ± std", "mean--std"),
    ],
)
def test_slug_is_githubs(heading, expected):
    assert slug(heading) == expected


def test_anchors_number_repeats_and_skip_code():
    text = (
        "# Title\n\n## Notes\n\n```python\n# Not a heading\n```\n\n"
        '## Notes\n\n<a id="here"></a>\n'
    )
    assert anchors(text) == {"title", "notes", "notes-1", "here"}


def test_links_are_found_outside_code_only():
    text = (
        'See [a](a.md) and ![b](images/b.png "B"),\n'
        "[![c](c.png)](<d e.md#top>) and [f][ref].\n"
        "`[not](x.md)` and\n```\n[not](y.md)\n```\n"
        '<img src="g.png" width="40">\n\n[ref]: h.md\n'
    )
    targets = [link.target for link in links(text)]
    assert sorted(targets) == sorted(
        ["a.md", "images/b.png", "d e.md#top", "c.png", "g.png", "h.md"]
    )
    assert [link.line for link in links(text) if link.target == "g.png"] == [7]


def test_a_link_spanning_lines_is_found():
    assert [link.target for link in links("see [the tiny\nbase](x.md).")] == [
        "x.md"
    ]


def test_problem_finds_every_kind_of_broken_link(tmp_path):
    (tmp_path / "docs" / "images").mkdir(parents=True)
    (tmp_path / "docs" / "images" / "x.png").write_bytes(b"png")
    (tmp_path / "README.md").write_text("# Top\n\n## The base\n")
    (tmp_path / "code.py").write_text("a = 1\nb = 2\n")
    guide = tmp_path / "docs" / "guide.md"
    guide.write_text("# Guide\n")
    ok = [
        "images/x.png",
        "../README.md",
        "../README.md#the-base",
        "#guide",
        "/docs/guide.md",
        "../code.py#L2",
        "https://example.com/nowhere",
        "mailto:someone@example.com",
    ]
    for target in ok:
        assert problem(guide, target, tmp_path) is None, target
    broken = [
        "images/y.png",
        "docs/images/x.png",  # resolved from docs/, not the root
        "../README.md#the-bases",
        "#nowhere",
        "../../outside.md",
        "../code.py#L9",
        "ftp://example.com/file",
        "",
    ]
    for target in broken:
        assert problem(guide, target, tmp_path), target


def test_broken_links_names_file_and_line(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\nfine [a](#page)\nbad [b](missing.md)\n")
    assert broken_links([page], tmp_path) == [
        "page.md:4: missing.md: missing.md does not exist"
    ]


# ---------------------------------------------------------------- the docs


def test_every_relative_link_resolves():
    broken = broken_links(documents())
    assert not broken, "Broken links:\n" + "\n".join(broken)


def test_the_documents_are_read():
    names = {path.relative_to(REPO).as_posix() for path in documents()}
    assert "README.md" in names
    guides = [name for name in names if re.fullmatch(r"docs/[^/]+\.md", name)]
    assert len(guides) >= MIN_GUIDES + 1, guides  # the guides and their index
    # The README links to its guides, and so the checker reads links.
    assert any(
        link.target.startswith("docs/")
        for link in links((REPO / "README.md").read_text(encoding="utf-8"))
    )


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the "
        "detail into a guide in docs/"
    )


def test_every_guide_is_reachable_from_the_readme():
    readme = REPO / "README.md"
    reached = set()
    todo = [readme]
    while todo:
        path = todo.pop()
        if path in reached:
            continue
        reached.add(path)
        for link in links(path.read_text(encoding="utf-8")):
            if problem(path, link.target) or link.target.lower().startswith(
                SKIPPED_SCHEMES
            ):
                continue
            target = link.target.partition("#")[0]
            if not target:
                continue
            resolved = (path.parent / urllib.parse.unquote(target)).resolve()
            if resolved.suffix == ".md" and resolved.is_file():
                todo.append(resolved)
    orphans = [
        path.relative_to(REPO).as_posix()
        for path in sorted((REPO / "docs").rglob("*.md"))
        if path.resolve() not in reached
    ]
    assert not orphans, f"Guides no link leads to: {orphans}"
