"""The probe's event log: fault injections and front-door changes on the probe's timeline."""

from __future__ import annotations

import threading
import time

import pandas as pd


class EventLog:
    """Timestamped events on the probe's timeline (fault injected, VIP moved...).

    Thread-safe: front-door watchers and notebook cells append from any
    thread. Times are stored as ``time.monotonic()`` values and shown relative
    to the origin, which the probe sets to its ``t0`` when it starts (unless
    the origin was set before).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[float, float, str, str, str]] = []
        self._origin: tuple[float, float] | None = None

    def set_origin(self, monotonic: float, wall: float, *, force: bool = False) -> None:
        """Set the timeline origin (monotonic and wall-clock of the same instant)."""
        with self._lock:
            if self._origin is None or force:
                self._origin = (monotonic, wall)

    @property
    def origin(self) -> tuple[float, float] | None:
        with self._lock:
            return self._origin

    def add(self, kind: str, detail: str = "", *, source: str = "", at: float | None = None) -> float:
        """Record an event now (or at monotonic time ``at``); return its monotonic time."""
        t = time.monotonic() if at is None else at
        wall = time.time() - (time.monotonic() - t)
        with self._lock:
            self._events.append((t, wall, kind, detail, source))
        return t

    def add_wall(self, kind: str, wall: float, detail: str = "", *, source: str = "") -> float:
        """Record an event that happened at wall-clock time ``wall`` (e.g. from a remote log)."""
        t = time.monotonic() - (time.time() - wall)
        with self._lock:
            self._events.append((t, wall, kind, detail, source))
        return t

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def frame(self) -> pd.DataFrame:
        """Events as a DataFrame: t (seconds from origin), wall, kind, detail, source."""
        with self._lock:
            rows = sorted(self._events)
            origin = self._origin
        base = origin[0] if origin else (rows[0][0] if rows else 0.0)
        return pd.DataFrame(
            [(t - base, wall, kind, detail, source) for t, wall, kind, detail, source in rows],
            columns=["t", "wall", "kind", "detail", "source"],
        )
