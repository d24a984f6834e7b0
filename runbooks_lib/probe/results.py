"""What a probe run measured: one row per request, the event log, per-lane counters; saved and loaded as files."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from runbooks_lib.probe.lanes import Lane, Target


#: Error classes a request can end with. ``dns``: the name could not be
#: resolved; ``dropped``: not sent because the lane's in-flight bound was
#: reached; ``unfinished``: still running when the drain period ended.
ERROR_CLASSES: tuple[str, ...] = (
    "connect_timeout",
    "refused",
    "unreachable",
    "reset",
    "read_timeout",
    "http_5xx",
    "dns",
    "dropped",
    "unfinished",
    "other",
)

COLUMNS: tuple[str, ...] = (
    "lane",
    "seq",
    "intended",
    "sent",
    "done",
    "latency",
    "send_lag",
    "ip_first",
    "ip_connected",
    "attempts",
    "dns",
    "connect",
    "first_byte",
    "total",
    "status",
    "error",
    "error_detail",
    "node",
    "pod",
    "uuid",
)


@dataclass(frozen=True)
class LaneStats:
    lane: str
    max_in_flight: int
    peak_in_flight: int
    dropped: int


@dataclass(frozen=True)
class ProbeResult:
    """Everything one probe run measured.

    ``requests`` has one row per scheduled request (see :data:`COLUMNS`;
    times in seconds relative to ``t0``); ``events`` is the event log's
    frame on the same timeline; ``t0_wall`` is the wall-clock time of ``t0``.
    """

    requests: pd.DataFrame
    events: pd.DataFrame
    t0_wall: float
    rate: float
    duration: float
    lanes: tuple[Lane, ...]
    lane_stats: tuple[LaneStats, ...] = field(default=())
    dns_queries: int = 0

    def save(self, directory: str | Path) -> Path:
        """Write requests.csv, events.csv and meta.json into ``directory`` (created)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.requests.to_csv(out / "requests.csv", index=False)
        self.events.to_csv(out / "events.csv", index=False)
        meta = {
            "t0_wall": self.t0_wall,
            "rate": self.rate,
            "duration": self.duration,
            "lanes": [asdict(lane) for lane in self.lanes],
            "lane_stats": [asdict(s) for s in self.lane_stats],
            "dns_queries": self.dns_queries,
        }
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> ProbeResult:
        """Read a result written by :meth:`save`."""
        src = Path(directory)
        meta = json.loads((src / "meta.json").read_text())
        requests = pd.read_csv(src / "requests.csv", dtype={"ip_first": "string", "ip_connected": "string"})
        events = pd.read_csv(src / "events.csv").fillna({"detail": "", "source": ""})
        lanes = tuple(Lane(**{**d, "target": Target(**d["target"])}) for d in meta["lanes"])
        return cls(
            requests=requests,
            events=events,
            t0_wall=meta["t0_wall"],
            rate=meta["rate"],
            duration=meta["duration"],
            lanes=lanes,
            lane_stats=tuple(LaneStats(**s) for s in meta["lane_stats"]),
            dns_queries=meta.get("dns_queries", 0),
        )
