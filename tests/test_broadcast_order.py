"""A committed edit reaches the other connections before its author's echo: the author
already holds it, the others are waiting (server/room.py, _broadcast_events)."""

from __future__ import annotations

from pycrdt import Doc, Text

from palimpsest import protocol as P
from palimpsest.backend import Backend
from palimpsest.settings import Settings
from palimpsest.store.memory import MemoryStore


class Recorder:
    """A connection as a room sees it; records who was sent an update, in order."""

    def __init__(self, pid: str, actor: str, log: list[str]) -> None:
        self.id = pid
        self.actor = actor
        self.log = log

    def send(self, frame: bytes) -> None:
        if isinstance(P.decode(frame), P.SyncUpdate):
            self.log.append(self.id)

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"{self.id} closed: {code} {reason}")


async def test_the_author_gets_its_echo_last() -> None:
    backend = Backend(Settings(), MemoryStore())
    async with backend:
        room = await backend.rooms.get("d")
        log: list[str] = []
        ann = Recorder("ann-1", "ann", log)  # joined first, so first in the room's order
        others = [Recorder(f"obs-{i}", f"obs{i}", log) for i in range(3)]
        for peer in [ann, *others]:
            room.join(peer)
        src: Doc = Doc()
        updates: list[bytes] = []
        src.observe(lambda e: updates.append(e.update))
        src.get("content", type=Text).insert(0, "hello")
        assert room.receive_update(ann, updates[0])
        await room.flush()
        assert log == ["obs-0", "obs-1", "obs-2", "ann-1"]
        assert str(room.doc.get("content", type=Text)) == "hello"


async def test_a_committed_edit_goes_out_before_the_room_applies_it() -> None:
    """Durable is enough to send: the room broadcasts a committed batch, echo included,
    and only then applies it to its own document (undo, attribution and the rest of the
    document's upkeep are off the latency of the edit)."""
    from palimpsest.extensions import Extension
    from palimpsest.features import builtin_extensions

    log: list[str] = []

    class Applied(Extension):
        def before_apply(self, room: object, event: object, origin: object) -> None:
            log.append("apply")

        def on_applied(self, room: object, event: object, origin: object) -> None:
            log.append("applied")

    settings = Settings()
    backend = Backend(settings, MemoryStore(), [Applied(), *builtin_extensions(settings)])
    async with backend:
        room = await backend.rooms.get("d")
        ann = Recorder("ann-1", "ann", log)
        obs = Recorder("obs-1", "obs", log)
        for peer in (ann, obs):
            room.join(peer)
        src: Doc = Doc()
        updates: list[bytes] = []
        src.observe(lambda e: updates.append(e.update))
        src.get("content", type=Text).insert(0, "hi")
        log.clear()
        assert room.receive_update(ann, updates[0])
        await room.flush()
        assert log == ["obs-1", "ann-1", "apply", "applied"]
        assert str(room.doc.get("content", type=Text)) == "hi"


async def test_events_from_another_process_go_out_before_they_are_applied() -> None:
    """Fan-out (another process logged them, server.fanout): the events that follow the
    document without a gap are sent on before the room applies them, as its own
    clients' are."""
    from palimpsest.extensions import Extension
    from palimpsest.features import builtin_extensions
    from palimpsest.store.base import NewEvent

    log: list[str] = []

    class Applied(Extension):
        def before_apply(self, room: object, event: object, origin: object) -> None:
            log.append("apply")

    settings = Settings()
    store = MemoryStore()
    backend = Backend(settings, store, [Applied(), *builtin_extensions(settings)])
    async with backend:
        room = await backend.rooms.get("d")
        room.join(Recorder("obs-1", "obs", log))
        src: Doc = Doc()
        updates: list[bytes] = []
        src.observe(lambda e: updates.append(e.update))
        text = src.get("content", type=Text)
        text.insert(0, "from ")
        text.insert(5, "elsewhere")
        # as another process does: logged first, then published
        [logged] = await store.append([("d", [NewEvent("eve", "edit", u, {}, 0) for u in updates])])
        log.clear()
        room.receive_peer_events(logged)
        await room.flush()
        assert log == ["obs-1", "apply", "apply"]  # one merged frame, then both applied
        assert str(room.doc.get("content", type=Text)) == "from elsewhere"
        assert room.seq == 2
