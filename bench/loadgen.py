"""Fallback load generator (asyncio + aiohttp) for machines without `wrk`.

Closed loop: CONCURRENCY connections, each sending its next request as soon as the previous answer
arrived, cycling through the API keys in KEYS_FILE, for DURATION seconds. Prints one line
"BENCH_JSON {...}" in the same shape as bench/wrk_requests.lua. Only loopback URLs are accepted.

    python bench/loadgen.py URL KEYS_FILE METHOD PATH BODY --concurrency 32 --duration 15
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from urllib.parse import urlsplit

import aiohttp


def _percentile(sorted_values: list[int], p: float) -> int:
    if not sorted_values:
        return 0
    i = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[i]


async def run(args: argparse.Namespace) -> dict[str, object]:
    keys = [k.strip() for k in args.keys_text.splitlines() if k.strip()]
    body = args.body.encode() if args.body else None
    templated = body is not None and b"{n}" in body
    counter = itertools.count()
    content_type = {"Content-Type": "application/json"} if body else {}
    headers_for = [{"Authorization": f"Bearer {k}", **content_type} for k in keys]
    latencies: list[int] = []
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    received = 0
    url = args.url.rstrip("/") + args.path
    deadline = time.perf_counter() + args.duration
    connector = aiohttp.TCPConnector(limit=args.concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker(n: int) -> None:
            nonlocal received
            i = (n * 7919) % len(keys)
            # open the connections a few at a time (as bench/wrk_requests.lua does), so that
            # uvicorn's workers, which accept from one shared socket, each get a share
            await asyncio.sleep((n // 4) * 0.025)
            while time.perf_counter() < deadline:
                i = (i + 1) % len(keys)
                t0 = time.perf_counter_ns()
                try:
                    data_out = body
                    if templated and body is not None:
                        # "{n}" in a body (usage events' ids): a fresh value each time
                        parts = body.split(b"{n}")
                        data_out = parts[0] + b"".join(
                            f"{n}-{next(counter)}".encode() + part for part in parts[1:]
                        )
                    async with session.request(
                        args.method, url, data=data_out, headers=headers_for[i]
                    ) as resp:
                        data = await resp.read()
                        received += len(data)
                        if resp.status >= 400:
                            errors["status"] += 1
                except TimeoutError:
                    errors["timeout"] += 1
                    continue
                except aiohttp.ClientConnectionError:
                    errors["connect"] += 1
                    await asyncio.sleep(0.01)
                    continue
                latencies.append((time.perf_counter_ns() - t0) // 1000)

        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(args.concurrency)))
        elapsed = time.perf_counter() - started

    latencies.sort()
    return {
        "duration_us": int(elapsed * 1e6),
        "requests": len(latencies) + errors["timeout"] + errors["connect"],
        "bytes": received,
        "errors": errors,
        "latency_us": {
            "mean": sum(latencies) / len(latencies) if latencies else 0.0,
            "max": latencies[-1] if latencies else 0,
            "p50": _percentile(latencies, 50),
            "p90": _percentile(latencies, 90),
            "p99": _percentile(latencies, 99),
            "p999": _percentile(latencies, 99.9),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("keys_file")
    parser.add_argument("method")
    parser.add_argument("path")
    parser.add_argument("body", nargs="?", default="")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    host = urlsplit(args.url).hostname or ""
    if not (host.startswith("127.") or host in ("localhost", "::1")):
        raise SystemExit("loadgen only targets loopback addresses")
    with open(args.keys_file, encoding="utf-8") as f:
        args.keys_text = f.read()
    try:
        import uvloop

        result = uvloop.run(run(args))
    except ImportError:
        result = asyncio.run(run(args))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
