"""`palimpsest copy` carries the revoked users: a user revoked on SQLite got back in
after the documented copy to PostgreSQL (and back), since the revocations
(`revoked_users`) stayed behind with the source."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from conftest import PG_URL, free_port, run_server

from palimpsest.auth.tokens import mint
from palimpsest.cli import main
from palimpsest.settings import Settings

SECRET = "copy-revocations-secret-of-32-bytes!!"


async def run(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capfd.readouterr()
    try:
        code = await asyncio.to_thread(main, list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def revoked(listing: str) -> dict[str, str]:
    rows = [json.loads(line) for line in listing.splitlines() if line.strip()]
    return {r["user"]: r["since"] for r in rows}


@pytest.mark.postgres
async def test_copy_carries_revocations_both_ways(
    tmp_path: Path, schema: str, capfd: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    pg = f"{PG_URL}?schema={schema}"
    text = tmp_path / "n.txt"
    text.write_text("hi")
    code, out, err = await run(capfd, "import", "notes", str(text), "--db", str(a))
    assert code == 0, err
    old_token = mint(SECRET, "mallory", "write", ["*"], 600, now=time.time() - 60)
    for user in ("mallory", "trent"):
        code, out, err = await run(capfd, "revoke", user, "--db", str(a))
        assert code == 0, err
    code, out, _ = await run(capfd, "revoke", "--list", "--db", str(a))
    source = revoked(out)
    assert set(source) == {"mallory", "trent"}

    # SQLite -> PostgreSQL, as docs/scaleout.md sets up
    code, out, err = await run(capfd, "copy", "--from", f"sqlite:///{a}", "--to", pg)
    assert code == 0, (out, err)
    assert "revocations: 2 of 2 carried (mallory, trent)" in out, out
    code, out, _ = await run(capfd, "revoke", "--list", "--store", pg)
    assert revoked(out) == source  # the same second, not the copy's

    # run again: nothing to carry, said so
    code, out, err = await run(capfd, "copy", "--from", f"sqlite:///{a}", "--to", pg, "--json")
    assert code == 0, (out, err)
    assert json.loads(out)["revocations"] == {"carried": 0, "of": 2}

    # PostgreSQL -> SQLite; a target that revoked trent later keeps its later time
    code, out, err = await run(capfd, "migrate", "--db", str(b), "--create")
    assert code == 0, err
    await asyncio.sleep(1.1)  # a later whole second
    code, out, err = await run(capfd, "revoke", "trent", "--db", str(b))
    assert code == 0, err
    code, out, _ = await run(capfd, "revoke", "--list", "--db", str(b))
    later = revoked(out)["trent"]
    assert later > source["trent"]
    code, out, err = await run(capfd, "copy", "--from", pg, "--to", f"sqlite:///{b}")
    assert code == 0, (out, err)
    assert "revocations: 1 of 2 carried (mallory), 1 already there" in out, out
    code, out, _ = await run(capfd, "revoke", "--list", "--db", str(b))
    assert revoked(out) == {"mallory": source["mallory"], "trent": later}

    # and a server on the copy refuses mallory's token, as the source's did
    settings = Settings(db=str(b), port=free_port(), jwt_secret=SECRET)
    async with run_server(settings) as srv, httpx.AsyncClient(base_url=srv.url) as http:
        r = await http.get("/api/docs", headers={"authorization": f"Bearer {old_token}"})
        assert r.status_code == 401 and "access revoked" in r.json()["detail"], r.text
