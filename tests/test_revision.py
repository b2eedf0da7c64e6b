"""The source revision that palimpsest_build_info reports (server/revision.py), read
from real git checkouts: a branch's loose ref, a packed ref, a detached HEAD, a linked
worktree; and no checkout at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

from palimpsest.revision import SHORT, checkout_head, revision


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, text=True, capture_output=True,
                          check=True).stdout.strip()  # fmt: skip


def commit(repo: Path, name: str) -> str:
    (repo / name).write_text(name)
    git(repo, "add", name)
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", name)
    return git(repo, "rev-parse", "HEAD")


def test_the_commit_a_checkout_has_checked_out(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    assert checkout_head(repo) is None  # a branch with no commit yet
    first = commit(repo, "a")
    assert checkout_head(repo) == first  # a loose ref
    second = commit(repo, "b")
    git(repo, "pack-refs", "--all")
    assert not (repo / ".git/refs/heads/main").exists()
    assert checkout_head(repo) == second  # packed-refs
    git(repo, "checkout", "-q", first)
    assert checkout_head(repo) == first  # detached
    git(repo, "checkout", "-q", "main")
    git(repo, "worktree", "add", "-q", "-b", "other", str(tmp_path / "wt"), first)
    assert (tmp_path / "wt/.git").is_file()
    assert checkout_head(tmp_path / "wt") == first
    third = commit(tmp_path / "wt", "c")
    assert checkout_head(tmp_path / "wt") == third
    assert checkout_head(repo) == second
    assert checkout_head(tmp_path) is None  # no checkout there


def test_the_running_code_names_this_checkout() -> None:
    here = Path(__file__).resolve().parent
    assert revision() == git(here, "rev-parse", "HEAD")[:SHORT]
