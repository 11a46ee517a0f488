#!/usr/bin/env python
"""Load test of the HTTP service on loopback: N concurrent clients send M requests in all to a server this script
starts (`python -m layoutkit.apps.serve` on 127.0.0.1, a free port) and stops; bounded by --max_seconds.

    python benchmarks/serve_load.py --model runs/invoices --words_json data/sample/annotations/invoice_0001.json \
        --clients 4 --requests 40
    python benchmarks/serve_load.py --model runs/invoices --document scan.png --clients 2 --requests 10 \
        --server_option=--workers=2

--words_json sends the annotation's words, boxes and page image as JSON (no OCR: measures the model and batching);
--document uploads an image or PDF (OCR included). Each configuration in --configs (server options, `;`-separated)
is one row. Prints a Markdown table: throughput, latency p50/p95/p99, errors (any non-200 answer; must be 0),
the server's peak resident memory (VmHWM) and the mean windows per forward batch (a page is one window or more).
"""

import argparse
import asyncio
import base64
import json
import shlex
import sys
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve_helpers import ServerProcess  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--words_json", help="an annotation JSON (words, boxes, image): sent as JSON, no OCR")
    source.add_argument("--document", help="an image or PDF: uploaded as multipart (OCR runs on the server)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=40, help="requests in all (after one warm-up request)")
    parser.add_argument("--max_seconds", type=float, default=240, help="stop sending after this long")
    parser.add_argument("--configs", default="--max_batch_size 16 --max_wait_ms 5",
                        help="server options per row, ';'-separated, e.g. '--max_batch_size 1;--max_batch_size 16'")
    parser.add_argument("--server_option", action="append", default=[], help="an option for every server")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be positive")
    return args


def request_maker(args):
    """A function giving aiohttp request keyword arguments for one request."""
    if args.words_json:
        path = Path(args.words_json)
        annotation = json.loads(path.read_text(encoding="utf-8"))
        image = path.parent.parent / "images" / annotation["image"]
        body = json.dumps({"words": annotation["words"], "boxes": annotation["boxes"],
                           "image": base64.b64encode(image.read_bytes()).decode()})
        return lambda: {"data": body, "headers": {"content-type": "application/json"}}
    path = Path(args.document)
    data = path.read_bytes()

    def multipart():
        form = aiohttp.FormData()
        form.add_field("file", data, filename=path.name)
        return {"data": form}

    return multipart


async def load(url: str, make_request, clients: int, total: int, max_seconds: float) -> dict:
    latencies, errors, sent = [], [], 0
    timeout = aiohttp.ClientTimeout(total=max_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.post(url + "/v1/extract", **make_request()) as response:  # warm-up (OCR models, caches)
            await response.read()
        async with session.get(url + "/health") as response:
            before = (await response.json())["batching"]
        deadline = time.monotonic() + max_seconds

        async def client():
            nonlocal sent
            while sent < total and time.monotonic() < deadline:
                sent += 1
                started = time.perf_counter()
                try:
                    async with session.post(url + "/v1/extract", **make_request()) as response:
                        await response.read()
                        if response.status != 200:
                            errors.append(response.status)
                            continue
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    errors.append(type(error).__name__)
                    continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        async with session.get(url + "/health") as response:
            after = (await response.json())["batching"]
    batching = {key: after[key] - before[key] for key in ("pages", "windows", "forward_batches")}
    return {"latencies": sorted(latencies), "errors": errors, "seconds": elapsed, "batching": batching}


def percentile(values, fraction):
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(fraction * (len(values) - 1)))]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main():
    args = parse_args()
    make_request = request_maker(args)
    rows = []
    for config in [c.strip() for c in args.configs.split(";") if c.strip()]:
        options = shlex.split(config) + [o for option in args.server_option for o in shlex.split(option)]
        log = Path(f"serve_load_{len(rows)}.log").resolve()
        with ServerProcess(args.model, *options, "--log_level", "warning", log_path=log) as server:
            result = asyncio.run(load(server.url, make_request, args.clients, args.requests, args.max_seconds))
            peak = peak_rss_mib(server.process.pid)
        log.unlink(missing_ok=True)
        latencies, batching = result["latencies"], result["batching"]
        rows.append({
            "config": config, "ok": len(latencies), "errors": len(result["errors"]),
            "throughput": len(latencies) / result["seconds"],
            "p50": 1000 * percentile(latencies, 0.50), "p95": 1000 * percentile(latencies, 0.95),
            "p99": 1000 * percentile(latencies, 0.99), "peak_mib": peak,
            "windows_per_batch": batching["windows"] / max(1, batching["forward_batches"]),
            "windows_per_page": batching["windows"] / max(1, batching["pages"]),
        })
        if result["errors"]:
            print(f"errors ({config}): {result['errors'][:20]}", file=sys.stderr)
    kind = "words JSON" if args.words_json else "upload (OCR)"
    print(f"\n{args.clients} clients, {args.requests} requests per row, {kind}, model {args.model}\n")
    print("| server options | ok | errors | requests/s | p50 ms | p95 ms | p99 ms | peak server RSS MiB "
          "| windows per forward batch (per page) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| `{row['config']}` | {row['ok']} | {row['errors']} | {row['throughput']:.2f} | {row['p50']:.0f} | "
              f"{row['p95']:.0f} | {row['p99']:.0f} | {row['peak_mib']:.0f} | "
              f"{row['windows_per_batch']:.1f} ({row['windows_per_page']:.1f}) |")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
