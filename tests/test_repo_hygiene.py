"""No committed file names a path of one development machine.

Users do not have the developers' folders (the workspace's ``shared`` folder, a home directory,
a scratch run directory): a committed absolute path is a command that fails or a claim nobody
can check. Facts belong in the project's own docs with their source; a developer-only folder is
referred to repo-relatively (``../shared/``); examples use relative paths or placeholders.
"""

from __future__ import annotations

import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

# An absolute path into a machine's own folders: the workspace, root's and users' homes, macOS
# homes, and /tmp used as a place for data or runs. Not preceded by a word character, a dot or
# '~' (so 'runs/tmp/x', 'a.b/tmp/' and '~/tmp/' do not match).
MACHINE_PATH = re.compile(
    r"(?<![\w.~$/-])/(?:work|root|tmp|home/[a-z_][\w.-]*|Users/[\w.-]+)/[\w.$-]"
)


def _absolute(*parts: str) -> str:
    """``/a/b/...`` built at run time, so that this file holds no machine path itself."""
    return "/" + "/".join(parts)


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, timeout=60
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [name for name in out.stdout.decode().split("\0") if name]


def machine_paths(name: str, text: str) -> list[str]:
    """``file:line: text`` for each line of ``text`` holding a machine path."""
    return [
        f"{name}:{number}: {line.strip()[:160]}"
        for number, line in enumerate(text.splitlines(), 1)
        if MACHINE_PATH.search(line)
    ]


def test_the_pattern_finds_machine_paths_and_only_them():
    found = [
        "see " + _absolute("work", "shared", "FINDINGS.md"),
        "--workdir=" + _absolute("tmp", "pclr_smoke"),
        "PY=" + _absolute("root", ".venv", "bin", "python"),
        '"' + _absolute("home", "alice", "data", "x.csv") + '"',
        _absolute("Users", "bob", "ecgs"),
    ]
    clean = [
        "see ../shared/FINDINGS.md",
        "--workdir=runs/smoke",
        "~/venvs/peer_torch/bin/python",
        "$HOME/venvs/x",
        "/proc/self/status",
        "gs://bucket" + _absolute("work", "x"),
        "https://github.com/google-research/big_vision/tree/main/big_vision/",
        "runs/tmp/x",
    ]
    assert all(MACHINE_PATH.search(line) for line in found)
    assert not any(MACHINE_PATH.search(line) for line in clean)


def test_no_tracked_file_names_a_machine_path():
    hits = []
    for name in tracked_files():
        path = REPO / name
        if not path.is_file():
            continue  # deleted in the work tree, not yet committed
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # binary (figures, weights)
        hits += machine_paths(name, text)
    assert not hits, "absolute paths of a development machine:\n" + "\n".join(hits)
