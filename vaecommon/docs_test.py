"""The documentation stays an on-ramp whose pointers hold.

- The top README is short: at most 300 lines and 25,000 bytes; reference material lives in the
  per-folder READMEs and module docstrings it links to.
- Every per-folder README is linked from the top README, and every relative link in a README
  points at a file that exists (and at a heading that exists, for `#anchor` links).
- Every `scripts/<name>.py` the READMEs name exists, and every command in `scripts/` is named in
  the top README.
- The README's test command is the one CI runs (`.ci/run`).
- No tracked text file holds a path of one particular machine (a home, scratch or work folder).
- Every message quoted in scripts/README.md's "When things go wrong" tables is still in the code.

Framework-free: reads files only (and `git ls-files` for the tracked-file check).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOP = ROOT / "README.md"
FOLDERS = ("jaxvae", "torchvae", "vaecommon", "parity_tests", "scripts")
MAX_LINES, MAX_BYTES = 300, 25_000

# Absolute paths that only exist on one machine. Built from parts so this file does not match
# itself. Public, documented install locations (Debian's dataset-fashion-mnist under
# /usr/share/datasets) are not machine paths and are not matched.
MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:" + "|".join(("work", "tmp", "root", "home")) + r")/")
# (tracked file, text on the matching line): documented exceptions, each with its reason.
ALLOWED_MACHINE_PATHS: set[tuple[str, str]] = set()  # none needed today


def _readmes() -> list[Path]:
    return [TOP] + [ROOT / f / "README.md" for f in FOLDERS if (ROOT / f / "README.md").exists()]


def _links(text: str) -> list[str]:
    """Targets of the Markdown links `[text](target)` in `text` (code spans excluded)."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces -> '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(m) for m in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def test_top_readme_is_an_on_ramp():
    data = TOP.read_bytes()
    lines = data.decode("utf-8").count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}): move reference " \
                               "material into the README of the folder it describes"
    assert len(data) <= MAX_BYTES, f"README.md has {len(data)} bytes (at most {MAX_BYTES})"


def test_every_folder_readme_exists_and_is_linked_from_the_top_readme():
    links = set(_links(TOP.read_text(encoding="utf-8")))
    missing = [f for f in FOLDERS if not (ROOT / f / "README.md").exists()]
    assert not missing, f"no README.md in {missing}"
    unlinked = [f for f in FOLDERS if f"{f}/README.md" not in {t.split("#")[0] for t in links}]
    assert not unlinked, f"README.md does not link {[f + '/README.md' for f in unlinked]}"


def test_relative_links_in_readmes_resolve():
    bad = []
    for md in _readmes():
        for target in _links(md.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            dest = (md.parent / path).resolve() if path else md
            if not dest.exists():
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                bad.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_commands_named_in_readmes_exist_and_every_command_is_named():
    named = set()
    for md in _readmes():
        named |= set(re.findall(r"scripts/([A-Za-z]\w*)\.py", md.read_text(encoding="utf-8")))
    missing = sorted(n for n in named if not (ROOT / "scripts" / f"{n}.py").exists())
    assert not missing, f"the READMEs name commands that do not exist: {missing}"
    commands = {p.stem for p in (ROOT / "scripts").glob("*.py")
                if not p.stem.startswith("_") and not p.stem.endswith("_test") and p.stem != "conftest"}
    top = set(re.findall(r"scripts/([A-Za-z]\w*)\.py", TOP.read_text(encoding="utf-8")))
    assert commands <= top, f"commands missing from README.md: {sorted(commands - top)}"


def test_readme_test_command_is_what_ci_runs():
    cmd = "python -m pytest -q -n 2"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^\S*" + re.escape(cmd) + r"( |$)", ci, flags=re.M), \
        f".ci/run no longer runs {cmd!r}: update README.md's Quickstart with it"
    assert cmd in TOP.read_text(encoding="utf-8"), f"README.md does not show CI's {cmd!r}"


def _tracked_files() -> list[str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p]


def test_no_tracked_file_holds_a_machine_path():
    found, used = [], set()
    for rel in _tracked_files():
        path = ROOT / rel
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:  # binary
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if not MACHINE_PATH.search(line):
                continue
            allowed = {(f, s) for f, s in ALLOWED_MACHINE_PATHS if f == rel and s in line}
            used |= allowed
            if not allowed:
                found.append(f"{rel}:{i}: {line.strip()}")
    assert not found, "machine-specific paths in tracked files:\n" + "\n".join(found)
    stale = ALLOWED_MACHINE_PATHS - used
    assert not stale, f"allow-list entries that no longer match (remove them): {sorted(stale)}"


# Messages the troubleshooting tables quote that argparse writes, not this code.
ARGPARSE_MESSAGES = ("argument --optimizer: invalid choice: ",)
MIN_PHRASE = 12  # shorter phrases ("step", "tried idx") say little about the message


def _string_literals() -> set[str]:
    """Every string literal of the packages, an f-string with NUL for each value (adjacent
    literals are one string to `ast`, so a message split over lines reads as one)."""
    out = set()
    for pkg in ("vaecommon", "jaxvae", "torchvae"):
        for path in (ROOT / pkg).rglob("*.py"):
            if path.name.endswith("_test.py"):
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.JoinedStr):
                    out.add("".join(v.value if isinstance(v, ast.Constant) else "\0"
                                    for v in node.values))
                elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                    out.add(node.value)
    return out


def _troubleshooting_messages() -> list[str]:
    """The code spans of the first column of scripts/README.md's "When things go wrong" tables."""
    text = (ROOT / "scripts" / "README.md").read_text(encoding="utf-8")
    section = text.split("## When things go wrong", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 15, "the troubleshooting tables are gone or moved"
    first = [re.split(r"(?<!\\)\|", row)[1] for row in rows]
    return [m.replace("\\|", "|") for cell in first for m in re.findall(r"`([^`]+)`", cell)]


def test_troubleshooting_messages_are_what_the_code_prints():
    """Each phrase of a quoted message (the text between `<value>` or `...` placeholders and
    punctuation, where the code joins the pieces of a message) is in a string literal of the
    code, so a reworded message fails here until the table follows it."""
    literals = _string_literals()
    missing = []
    for message in _troubleshooting_messages():
        if message.startswith(ARGPARSE_MESSAGES):
            continue
        for phrase in re.split(r"<[^<>]*>|\.\.\.|[;:,()\[\]|]", message):
            phrase = phrase.strip(" .")
            if len(phrase) >= MIN_PHRASE and not any(phrase in lit for lit in literals):
                missing.append(f"{phrase!r} (from {message[:60]!r})")
    assert not missing, "scripts/README.md quotes messages the code no longer prints:\n" + \
        "\n".join(missing)
