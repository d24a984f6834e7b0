"""Capacity of the open-loop probe on this machine, and its latency figures next to hey's.

    .venv/bin/python benchmarks/probe.py [--rates 250,500,...] [--duration 5] [--compare-rate 500]

1. Starts a healthy endpoint on loopback (an aiohttp server in a subprocess,
   answering like the test app).
2. Capacity: runs the probe (one ``direct`` lane, a new connection per
   request) at increasing rates; a rate is sustained when achieved/offered
   >= 0.99 and the send lag's p99 < 5 ms. Prints one line per rate.
3. Comparison: at ``--compare-rate``, the probe and hey (``/usr/bin/hey``,
   closed-loop, rate-limited with ``-q``) against the same endpoint, both
   with a new connection per request (``hey -disable-keepalive``) and with
   keep-alive (probe ``keepalive`` lane vs ``hey -c 1``). hey's per-request
   times come from its CSV output. Prints p50/p90/p99/max side by side.

Traffic goes to 127.0.0.1 only; every run is bounded in time; the endpoint
is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runbooks_lib import probe as p  # noqa: E402

SERVER = """
import sys, json, uuid
from aiohttp import web
async def root(request):
    return web.json_response({"uuid": str(uuid.uuid4()), "node": "bench", "pod": "bench-0"})
app = web.Application()
app.router.add_get("/", root)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None, backlog=4096)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_endpoint() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("endpoint did not start")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run_probe(lane: p.Lane, rate: float, duration: float) -> dict[str, float]:
    res = asyncio.run(p.probe(p.ProbeConfig((lane,), rate=rate, duration=duration, progress=False)))
    df = res.requests
    ok = df[df["error"].isna()]
    span = float(df["done"].max() - df["intended"].min())
    return {
        "offered": rate,
        "achieved": len(ok) / span if span > 0 else 0.0,
        "errors": int(df["error"].notna().sum()),
        "lag_p99_ms": float(df["send_lag"].quantile(0.99)) * 1000,
        "p50_ms": float(ok["latency"].quantile(0.5)) * 1000,
        "p90_ms": float(ok["latency"].quantile(0.9)) * 1000,
        "p99_ms": float(ok["latency"].quantile(0.99)) * 1000,
        "max_ms": float(ok["latency"].max()) * 1000,
        # From the moment the request really left (as hey measures): the difference to p99 above is the
        # probe's own send lag, which the open-loop latency counts on purpose.
        "p99_sent_ms": float((ok["done"] - ok["sent"]).quantile(0.99)) * 1000,
    }


def run_hey(port: int, rate: float, duration: float, *, workers: int, keepalive: bool) -> dict[str, float]:
    argv = ["/usr/bin/hey", "-z", f"{duration:g}s", "-c", str(workers), "-q", f"{rate / workers:g}", "-o", "csv"]
    if not keepalive:
        argv.append("-disable-keepalive")
    argv.append(f"http://127.0.0.1:{port}/")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    times = [float(r["response-time"]) for r in rows if r.get("status-code") == "200"]
    offsets = [float(r["offset"]) for r in rows]
    span = max(offsets) - min(offsets) if offsets else 0.0
    return {
        "offered": rate,
        "achieved": len(times) / span if span > 0 else 0.0,
        "errors": len(rows) - len(times),
        "lag_p99_ms": float("nan"),
        "p50_ms": pct(times, 0.5) * 1000,
        "p90_ms": pct(times, 0.9) * 1000,
        "p99_ms": pct(times, 0.99) * 1000,
        "max_ms": max(times) * 1000 if times else float("nan"),
        "p99_sent_ms": pct(times, 0.99) * 1000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rates", default="250,500,750,1000,1500,2000,2500,3000,4000")
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--compare-rate", type=float, default=500.0)
    args = ap.parse_args()
    if not os.path.exists("/usr/bin/hey"):
        print("hey is missing: apt-get install hey", file=sys.stderr)
        return 2
    proc, port = start_endpoint()
    try:
        lane = p.direct("127.0.0.1", port=port, connect_timeout=2.0, read_timeout=2.0, name="direct")
        run_probe(lane, 200, 1.0)  # warm-up
        print(f"capacity: one direct lane (new connection per request), {args.duration:g} s per rate")
        print(f"{'offered':>8} {'achieved':>9} {'ratio':>6} {'lag p99 ms':>10} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  ok")
        best = 0.0
        for rate in [float(r) for r in args.rates.split(",")]:
            r = run_probe(lane, rate, args.duration)
            ratio = r["achieved"] / rate
            ok = ratio >= 0.99 and r["lag_p99_ms"] < 5.0 and r["errors"] == 0
            best = rate if ok else best
            print(f"{rate:8.0f} {r['achieved']:9.1f} {ratio:6.3f} {r['lag_p99_ms']:10.2f} {r['p50_ms']:7.2f} "
                  f"{r['p99_ms']:7.2f} {r['errors']:6d}  {'yes' if ok else 'no'}")
            if not ok:
                break
        print(f"highest sustained open-loop rate: {best:.0f} req/s\n")

        rate = args.compare_rate
        print(f"latency at {rate:.0f} req/s for {args.duration:g} s, same endpoint (ms)")
        print(f"{'':34} {'achieved':>9} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>8} {'errors':>6} "
              f"{'p99 from send':>13}")
        rows = [
            ("probe direct (new conn)", run_probe(lane, rate, args.duration)),
            ("hey -disable-keepalive -c 1", run_hey(port, rate, args.duration, workers=1, keepalive=False)),
            ("probe keepalive (1 conn)", run_probe(p.keepalive(p.Target("127.0.0.1", port), read_timeout=2.0), rate, args.duration)),
            ("hey keep-alive -c 1", run_hey(port, rate, args.duration, workers=1, keepalive=True)),
        ]
        for name, r in rows:
            print(f"{name:34} {r['achieved']:9.1f} {r['p50_ms']:7.2f} {r['p90_ms']:7.2f} {r['p99_ms']:7.2f} "
                  f"{r['max_ms']:8.2f} {r['errors']:6d} {r['p99_sent_ms']:13.2f}")
        for q in ("p50_ms", "p99_ms", "p99_sent_ms"):
            d_new = rows[0][1][q] - rows[1][1][q]
            d_ka = rows[2][1][q] - rows[3][1][q]
            print(f"{q[:-3].replace('_', ' ')} difference probe - hey: new connection {d_new:+.2f} ms, "
                  f"keep-alive {d_ka:+.2f} ms")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
