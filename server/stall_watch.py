"""Where the event loop was when it stalled: a diagnostic, off unless asked for
(`PALIMPSEST_STALL_REPORT_MS`, or `Settings.stall_report_ms`).

A thread posts a beat to the loop every BEAT_SECONDS and waits for the loop to run it.
While it waits, it samples the loop thread's stack every SAMPLE_SECONDS. A beat that came
back later than the threshold is logged (logger ``palimpsest.stalls``) with how long the
loop was held and the stacks seen meanwhile, most frequent first, so that a latency tail
can be traced to the code that held the loop (a commit on the loop's thread, a fold, a
decode, the collector...), and the extension hook it caught running, if any (a plain
hook that blocks: ``in extension hook Misbehaving.on_update``, server.hook_timing).
Every stall is also counted in :attr:`StallWatch.stalls`.

Its cost while on: one wake-up of the loop every 5 ms, and a thread taking the
interpreter briefly every 1 ms while a beat is pending.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sys
import threading
import time
import traceback
from collections import Counter
from types import FrameType
from typing import Any

from . import hook_timing

log = logging.getLogger("palimpsest.stalls")

BEAT_SECONDS = 0.005
SAMPLE_SECONDS = 0.001
#: frames of each sampled stack shown, innermost last
DEPTH = 14


class StallWatch:
    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_ms: float) -> None:
        self.loop = loop
        self.threshold = threshold_ms / 1000.0
        #: (seconds held, {stack: samples}) of each stall seen, the last 1,000
        self.stalls: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread = threading.get_ident()  # started from the loop's thread
        #: frames sampled when the loop had closed (see _release)
        self._unreleased: list[list[dict[int, FrameType]]] = []

    def start(self) -> None:
        # in the context of what starts it (a named instance's lifespan): its lines say
        # the instance's name as every other line does (logs.INSTANCE)
        run = contextvars.copy_context().run
        self._thread = threading.Thread(
            target=run, args=(self._run,), name="stall-watch", daemon=True
        )
        self._thread.start()
        log.info("watching the event loop for stalls over %.1f ms", self.threshold * 1000)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1.0)

    def _run(self) -> None:
        while not self._stop.wait(BEAT_SECONDS):
            done = threading.Event()
            sent = time.perf_counter()
            try:
                self.loop.call_soon_threadsafe(done.set)
            except RuntimeError:  # the loop is closed
                return
            samples: Counter[str] = Counter()
            others: Counter[str] = Counter()
            hooks: Counter[str] = Counter()
            sampled: list[dict[int, FrameType]] = []
            try:
                while not done.wait(SAMPLE_SECONDS):
                    if self._stop.is_set():
                        return
                    self._sample(sampled, samples, others)
                    hook = hook_timing.CLOCK.running  # (a str or None: read at once)
                    if hook is not None:
                        hooks[hook] += 1
            finally:
                self._release(sampled)
            held = time.perf_counter() - sent
            if held >= self.threshold:
                self._report(held, samples, others, hooks)

    def _sample(
        self, sampled: list[dict[int, FrameType]], samples: Counter[str], others: Counter[str]
    ) -> None:
        frames = sys._current_frames()
        frames.pop(threading.get_ident(), None)  # (this one's own)
        sampled.append(frames)  # (their frames are the loop's to free: see _release)
        frame = frames.get(self._loop_thread)
        if frame is not None:
            samples["".join(traceback.format_stack(frame, DEPTH))] += 1
        # the loop may be waiting for the interpreter: who else was running
        for ident, other in frames.items():
            if ident != self._loop_thread and not _idle(other):
                others["".join(traceback.format_stack(other, DEPTH // 2))] += 1

    def _release(self, sampled: list[dict[int, FrameType]]) -> None:
        """Hand the frames sampled to the loop, which lets go of them: never freed here.

        A frame object outlives its call when something holds it, and then its locals
        with it: the frames of a call the loop has since left are freed by whoever lets
        go of them last, and so are their locals. Freed in this thread, at its next
        sample, they were freed while the loop was anywhere, in a transaction on a
        document too: an undo's pycrdt UndoManager (whose drop needs one) panicked there
        and took the process down. The loop frees them between two of its callbacks."""
        if not sampled:
            return
        try:
            self.loop.call_soon_threadsafe(sampled.clear)
        except RuntimeError:  # the loop is closed: kept with the watch, never freed here
            self._unreleased.append(sampled)

    def _report(
        self, held: float, samples: Counter[str], others: Counter[str], hooks: Counter[str]
    ) -> None:
        self.stalls.append((held, dict(samples)))
        del self.stalls[:-1000]
        head = f"event loop held for {held * 1000:.1f} ms; {sum(samples.values())} samples"
        for hook, n in hooks.most_common(2):
            head += f"; in extension hook {hook} in {n} of them"
        parts = [head]
        for stack, n in samples.most_common(3):
            parts.append(f"--- {n} samples:\n{stack}")
        for stack, n in others.most_common(2):
            parts.append(f"--- another thread, busy in {n} samples:\n{stack}")
        log.warning("\n".join(parts))


#: where a thread waits for work (nothing it does holds the event loop)
_IDLE = ("get", "wait", "_worker", "_connection_worker_thread", "_run", "select", "poll")


def _idle(frame: Any) -> bool:
    return frame.f_code.co_name in _IDLE and frame.f_code.co_filename.endswith(
        ("queue.py", "threading.py", "thread.py", "core.py", "sqlite.py", "selectors.py")
    )


def start_from_settings(threshold_ms: float | None) -> StallWatch | None:
    if not threshold_ms or threshold_ms <= 0:
        return None
    watch = StallWatch(asyncio.get_running_loop(), threshold_ms)
    watch.start()
    return watch
