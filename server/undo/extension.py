"""Undo as an extension: the recorder fed by the room's hooks, persisted in snapshot
meta, and the websocket operations and HTTP routes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

from ..errors import BadRequest, Forbidden
from ..extensions import Client, Extension, OpContext, Operation
from ..origins import Origin, ServerOrigin
from ..room import Room
from ..settings import Settings
from ..store.base import Event
from .actions import NOTHING_LEFT, Outcome, close_group, group_id, open_group, perform
from .recorder import META_KEY, REDO, UNDO, RoomUndo
from .stacks import GroupLimits

if TYPE_CHECKING:
    from ..backend import Backend
    from ..settings import Settings


# --- the extension ---------------------------------------------------------------------------


def answer(ev: Event | None, kind: str, outcome: Outcome) -> dict[str, Any]:
    """The answer to an undo or redo, over the websocket and HTTP: what it visibly did
    (``removed`` and ``added``: characters and items, as a restore's), and, only when
    there are some, ``removed_others`` (what it took out of other users' text,
    server/removed.py) and ``skipped`` (the seqs of each step it skipped as having
    nothing left to revert), and ``already`` ("restored": it stopped at the last step
    in ``skipped``, which a restore had done already, and changed nothing)."""
    if ev is None:
        reason = outcome.reason or (NOTHING_LEFT[kind] if outcome.skipped else f"nothing to {kind}")
        if outcome.skipped:
            # steps there, but nothing of them left: say so, and which
            return {"ok": False, "reason": reason, "skipped": outcome.skipped}
        return {"ok": False, "reason": reason}
    out: dict[str, Any] = {
        "ok": True,
        "seq": ev.seq,
        # (a step a restore did already: the event names it, for the stacks; the answer
        # says it in ``skipped``, with ``already``: this reverted nothing)
        "reverts": [] if outcome.already else list(ev.meta.get("reverts", [])),
        "removed": {"characters": outcome.removed[0], "items": outcome.removed[1]},
        "added": {"characters": outcome.added[0], "items": outcome.added[1]},
    }
    if outcome.removed_others:
        out["removed_others"] = outcome.removed_others
    if outcome.skipped:
        out["skipped"] = outcome.skipped
    if outcome.kept:
        out["kept_containers"] = outcome.kept
    if outcome.already:
        out["already"] = outcome.already
    return out


def _only_keys(body: dict[str, Any], kind: str, *keys: str) -> None:
    """Refuse a request with a key the operation does not read (``"user": "eve"``): it
    acts as the connection's user only, and an ignored key would undo the caller's own
    work where they meant someone else's (as the HTTP routes refuse unknown keys)."""
    unknown = sorted(set(body) - {"type", "id", *keys})
    if unknown:
        takes = ", ".join(repr(k) for k in keys) or "no key"
        raise BadRequest(
            f"{kind} takes {takes} besides 'type' and 'id', not "
            f"{', '.join(repr(k) for k in unknown)}: it acts as you, the connection's "
            "user, only; nothing was done"
        )


class Undo(Extension):
    """Per-user undo and redo: the stacks of every live room (typed room state, persisted
    in snapshot meta), the websocket operations undo / redo / open_group / close_group
    and the HTTP routes POST /api/docs/{doc}/undo, /redo, /undo/open, /undo/close."""

    #: its hooks read the event and the change the room hands over, never the document
    reads_doc_per_event = False

    def __init__(
        self,
        capture_ms: int = 500,
        max_depth: int = 200,
        max_group: int = 1000,
        groups: GroupLimits | None = None,
        skip_roots: tuple[str, ...] = (),
    ) -> None:
        self.capture_ms = capture_ms
        self.skip_roots = skip_roots
        self.max_depth = max_depth
        self.max_group = max_group
        self.groups = groups or GroupLimits()

    @classmethod
    def from_settings(cls, settings: Settings) -> Undo:
        return cls(
            settings.undo_capture_ms,
            settings.undo_max_depth,
            settings.undo_max_group,
            GroupLimits.from_settings(settings),
            settings.undo_skip_roots,
        )

    def setup(self, backend: Backend) -> None:
        self.backend = backend

    def state(self, room: Room) -> RoomUndo:
        """The room's undo state, made (from the snapshot's meta) on first use."""
        return room.state(RoomUndo, self._new_state)

    def _new_state(self, room: Room) -> RoomUndo:
        state = RoomUndo(
            room, self.capture_ms, self.max_depth, self.max_group, self.groups, self.skip_roots
        )
        state.load_meta(room.snapshot_meta.get(META_KEY))
        return state

    # --- hooks ---------------------------------------------------------------------------

    async def on_load(self, room: Room) -> None:
        self.state(room)  # replay made it already unless no event came after the snapshot

    def before_apply(self, room: Room, event: Event, origin: Origin) -> None:
        # what the doc's transactions record from here on is this event's; unless its
        # change is handed over (room.current_change): then on_applied does not look
        if room.current_change is None:
            room.state(RoomUndo, self._new_state).mark()

    def on_applied(self, room: Room, event: Event, origin: Origin) -> None:
        state = room.state(RoomUndo, self._new_state)
        if isinstance(origin, ServerOrigin):
            # a server change: made on the live doc before its event was logged
            state.record(event, *state.take())
        elif origin.tracked:
            change = room.current_change  # a client's edit: its transaction went unobserved
            state.record(event, *(change if change is not None else state.take(state._mark)))

    def on_unload(self, room: Room) -> None:
        state = room.peek(RoomUndo)
        if state is not None:
            state.close()

    def snapshot_meta(self, room: Room) -> Mapping[str, Any]:
        return {META_KEY: self.state(room).to_meta()}

    def hello_answer(self, room: Room, client: Client) -> Mapping[str, Any]:
        """``can_undo`` / ``can_redo``: whether the user has a step on their undo / redo
        stack now (an undo of it may still find nothing left of it to revert: others
        deleted it all), false for a reader, who may not undo. A client's buttons start
        right, before its first undo; the answer to each undo and redo says them again,
        after it. What else changes them (its own edits, an undo from another tab) no
        answer follows: a hello asked again says."""
        st = self.state(room).get(client.user) if client.identity.can_write else None
        return {
            "can_undo": st is not None and bool(st.undo),
            "can_redo": st is not None and bool(st.redo),
        }

    # --- websocket operations -------------------------------------------------------------

    def operations(self) -> Mapping[str, Operation]:
        return {
            UNDO: self._op_undo,
            REDO: self._op_redo,
            "open_group": self._op_open_group,
            "close_group": self._op_close_group,
        }

    async def _op(self, ctx: OpContext, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        if not ctx.client.identity.can_write:
            raise Forbidden(f"read-only: you cannot {kind}")
        _only_keys(body, kind)
        outcome = Outcome()
        ev = await perform(ctx.room, ctx.client.user, kind, self.backend, outcome)
        if ev is not None:
            ctx.charge(len(ev.update))  # an undo appends as much as the edit it reverts
        # (after the op, as hello's: the page's Undo and Redo buttons follow each answer)
        return {**answer(ev, kind, outcome), **self.hello_answer(ctx.room, ctx.client)}

    async def _op_undo(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        return await self._op(ctx, UNDO, body)

    async def _op_redo(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        return await self._op(ctx, REDO, body)

    async def _op_close_group(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        if not ctx.client.identity.can_write:
            raise Forbidden("read-only: you cannot close an undo step")
        _only_keys(body, "close_group", "group")
        # edits this connection sent before the request are still in the pipeline: they
        # belong to the group being closed
        await ctx.flush()
        group = None if body.get("group") is None else group_id(body.get("group"))
        # this connection's step (and the group): another tab's goes on
        session = ctx.session or ctx.client.id
        return (await close_group(ctx.room, ctx.client.user, group, session)).to_json()

    async def _op_open_group(self, ctx: OpContext, body: dict[str, Any]) -> dict[str, Any]:
        if not ctx.client.identity.can_write:
            raise Forbidden("read-only: you cannot open an undo group")
        _only_keys(body, "open_group", "group")
        group = group_id(body.get("group"))
        # edits this connection sent before the request stay out of the group
        await ctx.flush()
        return (await open_group(ctx.room, ctx.client.user, group)).to_json()

    # --- HTTP -------------------------------------------------------------------------------

    def routes(self) -> Sequence[BaseRoute]:
        from ..routes.undo import routes

        return routes


__all__ = ["Undo"]
