"""Open-loop HTTP latency probe for failover drills.

Every lane sends requests on a fixed timetable (no coordinated omission),
resolves names itself against a chosen DNS server, and emulates one client
model (naive, fallback, happy_eyeballs, direct, keepalive), since how a
client reacts to a dead address decides what a user sees. Import the package
as a namespace: ``probe.run(probe.ProbeConfig(lanes=(probe.naive(target),), ...))``.

Modules: ``lanes`` (Target, Lane, the client models), ``resolver`` (DNS),
``http`` (one request/response exchange), ``lane_runner`` (one lane's
requests), ``scheduler`` (the open-loop timetable, ProbeConfig, run/start),
``results`` (ProbeResult, COLUMNS), ``events`` (EventLog).
"""

from runbooks_lib.probe.events import EventLog
from runbooks_lib.probe.http import parse_identity
from runbooks_lib.probe.lanes import MODELS, Lane, Model, Target, direct, fallback, happy_eyeballs, keepalive, naive
from runbooks_lib.probe.resolver import CachingResolver
from runbooks_lib.probe.results import COLUMNS, ERROR_CLASSES, LaneStats, ProbeResult
from runbooks_lib.probe.scheduler import IsolatedProbeRun, ProbeConfig, ProbeRun, probe, run, start

__all__ = [
    "COLUMNS",
    "ERROR_CLASSES",
    "MODELS",
    "CachingResolver",
    "EventLog",
    "IsolatedProbeRun",
    "Lane",
    "LaneStats",
    "Model",
    "ProbeConfig",
    "ProbeResult",
    "ProbeRun",
    "Target",
    "direct",
    "fallback",
    "happy_eyeballs",
    "keepalive",
    "naive",
    "parse_identity",
    "probe",
    "run",
    "start",
]
