"""Helpers for tests that drive a Room in process, without sockets."""

from __future__ import annotations

from typing import Any

from pycrdt import TransactionEvent

from palimpsest import protocol as P
from palimpsest.ranges import Ranges, decode_ranges


class Peer:
    """A connection of the room's that reads nothing and must never be closed."""

    def __init__(self, pid: str, actor: str) -> None:
        self.id, self.actor = pid, actor

    def send(self, frame: bytes) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"{self.id} closed: {code} {reason}")


def as_set(r: Ranges) -> set[tuple[int, int]]:
    """Clock ranges as the set of (client, clock) they cover."""
    return {(c, k) for c, rs in r.items() for s, e in rs for k in range(s, e)}


def observed_change(e: TransactionEvent) -> tuple[Ranges, Ranges]:
    """What a transaction inserted (its state vectors before and after) and deleted (its
    delete set), as a transaction observer sees it."""
    ev: Any = e  # pycrdt's stubs lack the state vectors and delete set it carries
    b = P.decode_state_vector(ev.before_state)
    a = P.decode_state_vector(ev.after_state)
    ins = {c: [(b.get(c, 0), k)] for c, k in a.items() if k > b.get(c, 0)}
    return ins, decode_ranges(ev.delete_set)
