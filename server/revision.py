"""The source revision of the running code, for ``palimpsest_build_info{revision=…}``: the
package's version stays the same across commits, and during a rolling upgrade the
metrics must tell upgraded processes from the others.

Found once, cheaply, and without running anything: the commit the git checkout the
code runs from has checked out (read from ``.git``: HEAD, a loose ref or packed-refs,
a worktree's ``gitdir``), that checkout found beside the package's resolved files or
at the directory it was installed from (PEP 610 ``direct_url.json``); else the commit
an install from a VCS URL names there (``pip install git+…@REV``); else "unknown". A
checkout's uncommitted changes are not seen.
"""

from __future__ import annotations

import functools
import json
import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import unquote, urlsplit

#: the length of the revision given (git's short form, long enough to be unique)
SHORT = 12
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")


@functools.cache
def revision() -> str:
    """The short commit id of the running code, or "unknown" (found at the first call)."""
    direct: dict[str, object] = {}
    try:
        text = distribution("palimpsest").read_text("direct_url.json")
        direct = json.loads(text) if text else {}
    except (PackageNotFoundError, ValueError, OSError):
        pass
    roots = [Path(__file__).resolve().parent.parent]
    url = direct.get("url")
    if isinstance(url, str) and url.startswith("file://"):
        roots.append(Path(unquote(urlsplit(url).path)))
    for root in roots:
        sha = checkout_head(root)
        if sha is not None:
            return sha[:SHORT]
    vcs = direct.get("vcs_info")
    commit = vcs.get("commit_id") if isinstance(vcs, dict) else None
    if isinstance(commit, str) and _SHA.match(commit):
        return commit[:SHORT]
    return "unknown"


def checkout_head(root: Path) -> str | None:
    """The full commit id checked out in the git working tree at `root`, or None (no
    checkout there, or one this cannot read)."""
    try:
        git = root / ".git"
        if git.is_file():  # a worktree or a submodule: "gitdir: PATH"
            line = git.read_text().strip()
            if not line.startswith("gitdir:"):
                return None
            git = root / line.removeprefix("gitdir:").strip()
        if not git.is_dir():
            return None
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head if _SHA.match(head) else None  # detached
        ref = head.removeprefix("ref:").strip()
        common = git
        if (git / "commondir").is_file():  # a worktree's refs live in the main .git
            common = git / (git / "commondir").read_text().strip()
        for d in (git, common):
            if (d / ref).is_file():
                sha = (d / ref).read_text().strip()
                return sha if _SHA.match(sha) else None
        packed = common / "packed-refs"
        if packed.is_file():
            for line in packed.read_text().splitlines():
                sha, _, name = line.partition(" ")
                if name == ref and _SHA.match(sha):
                    return sha
    except (OSError, UnicodeDecodeError):
        pass
    return None
