"""Text diffs stay minimal at any size: a typo-fix bot's based PUT /text, and a restore
past a long paste, change only what changed, whether the text has 40 lines or 2,000.

The character diff used to give up past a few kB (its anchors are elements unique on
both sides, and almost no character is): a based PUT that fixed "teh" in every line of
a 40-line text deleted and retyped the whole text, which brought back a line a human
had deleted meanwhile and made the bot the writer of the human's text; a restore past a
7.5 kB paste re-credited the human text beside it to the restorer. A real server
process over real SQLite, a real Yjs client (client.connect) for the human, the HTTP
API (client.History) for the bot, the reviewer and blame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from serverproc import ServerProcess

from palimpsest.client import History, connect


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    async with ServerProcess(tmp_path / "server") as srv:
        yield srv


def lines(n: int) -> str:
    return "".join(f"line {k}: teh human wrote this sentence carefully.\n" for k in range(n))


async def by_actor(h: History, doc: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for run in await h.blame(doc, join="actor"):
        out[run.actor] = out.get(run.actor, "") + run.text
    return out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [40, 2000])
async def test_a_based_typo_fix_keeps_a_line_deleted_meanwhile_deleted(
    server: ServerProcess, n: int
) -> None:
    doc = f"typos-deleted-{n}"
    async with connect(server.ws_url, doc, user="human") as hu:
        hu.text().insert(0, lines(n))
        await hu.flush()
        async with History(server.http_url, user="bot") as bot:
            read = await bot.version(doc)
            while read.text != lines(n):  # (the human's insert logged)
                read = await bot.version(doc)
            # while the bot thinks, the human deletes line 5 and adds a title
            t = str(hu.text())
            i, j = t.index("line 5:"), t.index("line 6:")
            hu.text().delete(i, j - i)
            await hu.flush()
            hu.text().insert(0, "TITLE\n")
            await hu.flush()

            fixed = read.text.replace("teh", "the")
            assert await bot.put_text(doc, fixed, base=read.seq) is not None
            await hu.wait_for(lambda: "teh" not in str(hu.text()))
            now = (await bot.version(doc)).text
            five = "line 5: the human wrote this sentence carefully.\n"
            assert "line 5:" not in now, now[:400]
            # what stays where line 5 was is at most the bot's own fix of it: a Yjs
            # insertion into text deleted concurrently survives the deletion
            start = now.index("line 6:")
            head, tail = now[:start], now[start:]
            kept = "TITLE\n" + fixed[: fixed.index(five)]
            assert head.startswith(kept) and set(head[len(kept) :]) <= set("the"), head[-120:]
            assert len(head) - len(kept) <= 3
            assert tail == fixed[fixed.index(five) + len(five) :]
            await hu.wait_for(lambda: str(hu.text()) == now)

            # the bot wrote its fixes (two or three characters a line at most), the
            # human the rest
            mine = await by_actor(bot, doc)
            assert len(mine.get("bot", "")) <= 3 * n, mine.get("bot", "")[:200]
            assert len(mine.get("human", "")) >= len(now) - 3 * n
            assert "TITLE\n" in mine["human"] and "human wrote" in mine["human"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("n", [40, 2000])
async def test_a_based_typo_fix_leaves_the_human_the_writer_of_their_text(
    server: ServerProcess, n: int
) -> None:
    doc = f"typos-blame-{n}"
    async with connect(server.ws_url, doc, user="human") as hu:
        hu.text().insert(0, lines(n))
        await hu.flush()
        async with History(server.http_url, user="bot") as bot:
            read = await bot.version(doc)
            while read.text != lines(n):
                read = await bot.version(doc)
            hu.text().insert(0, "NEW TITLE by human\n")  # typed while the bot thinks
            await hu.flush()
            fixed = read.text.replace("teh", "the")
            assert await bot.put_text(doc, fixed, base=read.seq) is not None
            await hu.wait_for(lambda: "teh" not in str(hu.text()))
            assert (await bot.version(doc)).text == "NEW TITLE by human\n" + fixed
            mine = await by_actor(bot, doc)
            # the bot wrote at most its fixes (blame may see the "h" it moved as the
            # human's), the human all the rest
            bot_chars = mine.get("bot", "")
            assert len(bot_chars) <= 3 * n, {k: v[:100] for k, v in mine.items()}
            assert set(bot_chars) <= set("the"), bot_chars[:200]
            human = mine["human"]
            assert len(human) == len("NEW TITLE by human\n") + len(fixed) - len(bot_chars)

            # the bot's undo takes back its fixes only
            await bot.undo(doc)
            back = "NEW TITLE by human\n" + read.text
            await hu.wait_for(lambda: str(hu.text()) == back)
            assert set(await by_actor(bot, doc)) == {"human"}


PASTES = {
    "7.5 kB on one line": "the model says hi " * 417,
    "2,000 lines": "".join(f"model line {k}: the model says hi\n" for k in range(2000)),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("paste", sorted(PASTES))
async def test_a_restore_past_a_long_paste_and_its_undo_keep_the_writers(
    server: ServerProcess, paste: str
) -> None:
    doc = "restore-" + paste.split()[0].replace(".", "").replace(",", "")
    bot_text, hum = PASTES[paste], "hA0hA1"
    async with connect(server.ws_url, doc, user="human2") as h2:
        h2.text().insert(0, "Intro.\n[[]]\nHUMAN:\nend.\n")
        await h2.flush()
    async with History(server.http_url, user="reviewer") as rev:
        v0 = await rev.version(doc)
        while v0.text != "Intro.\n[[]]\nHUMAN:\nend.\n":
            v0 = await rev.version(doc)
        async with connect(server.ws_url, doc, user="bot") as b, connect(
            server.ws_url, doc, user="human"
        ) as hu:  # fmt: skip
            b.text().insert(str(b.text()).index("]]"), bot_text)
            await b.flush()
            await hu.wait_for(lambda: bot_text in str(hu.text()))
            hu.text().insert(str(hu.text()).index("HUMAN:") + 6, hum)
            await hu.flush()
        head = await rev.version(doc)
        while hum not in head.text:
            head = await rev.version(doc)
        before = await by_actor(rev, doc)
        assert before == {"human2": "Intro.\n[[]]\nHUMAN:\nend.\n", "bot": bot_text, "human": hum}

        r = await rev.restore(doc, v0.seq)
        # only the paste and the human's insertion go; nothing is retyped
        assert (r.removed_characters, r.added_characters) == (len(bot_text) + len(hum), 0)
        assert (await rev.version(doc)).text == v0.text
        assert await by_actor(rev, doc) == {"human2": v0.text}

        u = await rev.undo(doc)
        assert u.ok
        assert (await rev.version(doc)).text == head.text
        assert await by_actor(rev, doc) == before
