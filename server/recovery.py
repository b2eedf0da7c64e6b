"""The recovery window a restored SQLite backup opens (settings.recovering_minutes,
docs/operations.md#recovering-lost-edits): `palimpsest backup --replace` leaves a marker
file beside the database, and the server started on it next takes the clients' copies
of later edits back for RESTORED_MINUTES (Backend.start, ownership.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

log = logging.getLogger("palimpsest")

#: minutes a server started on a restored database takes lost edits back
RESTORED_MINUTES = 60.0


def recovery_marker(db: str) -> Path:
    """The file beside a SQLite database that says it was restored from a backup."""
    return Path(db + ".recovering")


def restored_minutes(marker: Path) -> float:
    """Minutes left of the recovery window a restored backup's marker file opens: "60"
    (minutes) as `backup --replace` writes it, made "until <epoch seconds> <minutes>" by
    the first start that reads it, so that a start that fails (a port in use) or a
    restart within the hour keeps what is left; removed once it has passed. 0 without
    one. What is left is never more than the window's minutes (RESTORED_MINUTES for a
    marker that does not say): a restart with the wall clock stepped back a day read the
    deadline as a day and an hour away and took lost edits back for 25 hours."""
    try:
        text = marker.read_text().strip()
    except FileNotFoundError:
        return 0.0
    except OSError as e:
        log.warning("cannot read %s: %s", marker, e)
        return 0.0
    now = time.time()
    try:
        if text.startswith("until "):
            parts = text.split()
            until = float(parts[1])
            window = float(parts[2]) if len(parts) > 2 else RESTORED_MINUTES
        else:
            window = float(text or "60")
            until = now + window * 60
            # (rounded up, it ran over the hour)
            marker.write_text(f"until {until:.3f} {window:g}\n")
    except (ValueError, IndexError, OSError) as e:
        log.warning("%s is not a recovery window (%s): removed", marker, e)
        marker.unlink(missing_ok=True)
        return 0.0
    if not now < until < float("inf"):
        marker.unlink(missing_ok=True)
        return 0.0
    left = (until - now) / 60
    if left > window:
        log.warning(
            "%s: the recovery window ends %.0f min from now by this clock, more than its "
            "%g min: the clock is behind the one that opened it (stepped back?); "
            "recovering for %g min",
            marker, left, window, window,
        )  # fmt: skip
        return window
    return left


__all__ = ["RESTORED_MINUTES", "recovery_marker", "restored_minutes"]
