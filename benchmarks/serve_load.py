#!/usr/bin/env python
"""Load test of the HTTP service on loopback: N concurrent clients send M requests in all to a server this script
starts (`python -m layoutkit.apps.serve` on 127.0.0.1, a free port) and stops; bounded by --max_seconds.

    python benchmarks/serve_load.py --model runs/invoices --words_json data/sample/annotations/invoice_0001.json \
        --clients 4 --requests 40
    python benchmarks/serve_load.py --model runs/invoices --document scan.png --clients 2 --requests 10 \
        --server_option=--workers=2
    python benchmarks/serve_load.py --model runs/invoices --words_json ANNOTATION.json --document scan.png \
        --hostile --clients 8 --requests 48

--words_json sends the annotation's words, boxes and page image as JSON (no OCR: measures the model and batching);
--document uploads an image or PDF (OCR included); with both, requests alternate. --hostile mixes in, one request
in two, the requests a service meets from careless or hostile clients: a corrupt PNG, random bytes, a body above
--max_upload_mb, a PNG header declaring 20000x20000 pixels, a 50-page PDF, a words request with a box outside the
page (all must be answered 4xx), and among the good ones an upload with a path-like file name and words with boxes
normalised to 0-1 (answered 200 with a warning). Each configuration in --configs (server options, `;`-separated) is
one row. Prints a Markdown table: throughput of the good requests, latency p50/p95 of the good requests and of the
4xx answers, errors (any answer other than the expected; must be 0), the server's peak resident memory (VmHWM), and
the batching: pages and windows per forward pass (from the batcher's counters; 1 page per pass or fewer: no
batching across requests), forward-pass time per page and how busy the model was (forward time over wall time:
batching can only pay when this is high).
"""

import argparse
import asyncio
import base64
import io
import json
import shlex
import sys
import time
from pathlib import Path

import aiohttp
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from serve_helpers import ServerProcess  # noqa: E402


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="checkpoint folder")
    parser.add_argument("--words_json", help="an annotation JSON (words, boxes, image): sent as JSON, no OCR")
    parser.add_argument("--document", help="an image or PDF: uploaded as multipart (OCR runs on the server)")
    parser.add_argument("--hostile", action="store_true", help="mix in bad and odd requests (see above)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=40, help="requests in all (after one warm-up request)")
    parser.add_argument("--max_seconds", type=float, default=240, help="stop sending after this long")
    parser.add_argument("--configs", default="--max_batch_size 16 --max_wait_ms 5",
                        help="server options per row, ';'-separated, e.g. '--max_batch_size 1;--max_batch_size 16'")
    parser.add_argument("--server_option", action="append", default=[], help="an option for every server")
    args = parser.parse_args()
    if args.clients < 1 or args.requests < 1:
        parser.error("--clients and --requests must be positive")
    if not (args.words_json or args.document):
        parser.error("give --words_json, --document or both")
    return args


def upload(data: bytes, name: str, content_type: str | None = None):
    def make():
        form = aiohttp.FormData()
        form.add_field("file", data, filename=name, content_type=content_type or "application/octet-stream")
        return {"data": form}
    return make


def png(size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, "white").save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header (IHDR, valid CRC) declares width x height: a decompression bomb's header."""
    import struct
    import zlib

    data = bytearray(png((1, 1)))
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def many_page_pdf(pages: int) -> bytes:
    buffer = io.BytesIO()
    images = [Image.new("RGB", (200, 280), "white") for _ in range(pages)]
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def request_kinds(args, max_upload_mb: float):
    """(kind, a function giving aiohttp request keyword arguments, expected: "ok" or "4xx"), sent in turn."""
    good, bad = [], []
    if args.words_json:
        path = Path(args.words_json)
        annotation = json.loads(path.read_text(encoding="utf-8"))
        image_path = path.parent.parent / "images" / annotation["image"]
        image = base64.b64encode(image_path.read_bytes()).decode()
        body = json.dumps({"words": annotation["words"], "boxes": annotation["boxes"], "image": image})
        good.append(("words JSON", lambda: {"data": body, "headers": {"content-type": "application/json"}}, "ok"))
        if args.hostile:
            with Image.open(image_path) as page:
                width, height = page.size
            normalised = json.dumps({"words": annotation["words"], "image": image, "boxes": [
                [x0 / width, y0 / height, x1 / width, y1 / height] for x0, y0, x1, y1 in annotation["boxes"]]})
            outside = json.dumps({"words": annotation["words"], "image": image, "boxes": [
                [x0, y0, x1 + 10 * width, y1] for x0, y0, x1, y1 in annotation["boxes"]]})
            good.append(("words JSON, normalised boxes",
                         lambda: {"data": normalised, "headers": {"content-type": "application/json"}}, "ok"))
            bad.append(("words JSON, box outside the page",
                        lambda: {"data": outside, "headers": {"content-type": "application/json"}}, "4xx"))
    if args.document:
        path = Path(args.document)
        data = path.read_bytes()
        good.append(("upload", upload(data, path.name), "ok"))
        if args.hostile:
            good.append(("upload, path-like name", upload(data, "../../../etc/" + path.name), "ok"))
            bad.append(("truncated upload", upload(data[: len(data) // 2], path.name), "4xx"))
    if args.hostile:
        oversized = b"\0" * int((max_upload_mb + 1) * 1_000_000)
        bad += [
            ("random bytes", upload(bytes(range(256)) * 64, "scan.png", "image/png"), "4xx"),
            ("oversized body", lambda: {"data": oversized, "headers": {"content-type": "image/png"}}, "4xx"),
            ("20000x20000 PNG header", upload(huge_png_header(20000, 20000), "bomb.png", "image/png"), "4xx"),
            ("50-page PDF", upload(many_page_pdf(50), "long.pdf", "application/pdf"), "4xx"),
        ]
    kinds = []
    for index in range(max(len(good), len(bad))):  # good and bad alternate
        kinds += [good[index % len(good)]] + ([bad[index % len(bad)]] if bad else [])
    return kinds


async def load(url: str, kinds, clients: int, total: int, max_seconds: float) -> dict:
    latencies = {"ok": [], "4xx": []}
    by_kind: dict[str, list[float]] = {}
    errors, sent = [], 0
    timeout = aiohttp.ClientTimeout(total=max_seconds)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _, make_request, expected in kinds:  # warm-up: one good request (OCR models, caches)
            if expected == "ok":
                async with session.post(url + "/v1/extract", **make_request()) as response:
                    await response.read()
                break
        async with session.get(url + "/health") as response:
            before = (await response.json())["batching"]
        deadline = time.monotonic() + max_seconds

        async def client():
            nonlocal sent
            while sent < total and time.monotonic() < deadline:
                kind, make_request, expected = kinds[sent % len(kinds)]
                sent += 1
                started = time.perf_counter()
                try:
                    async with session.post(url + "/v1/extract", **make_request()) as response:
                        await response.read()
                        status = response.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                    errors.append(f"{kind}: {type(error).__name__}")
                    continue
                got = "ok" if status == 200 else "4xx" if 400 <= status < 500 else str(status)
                if got != expected:
                    errors.append(f"{kind}: {status}")
                    continue
                latencies[got].append(time.perf_counter() - started)
                by_kind.setdefault(kind, []).append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        async with session.get(url + "/health") as response:
            after = (await response.json())["batching"]
    batching = {key: after[key] - before[key] for key in ("pages", "windows", "forward_batches", "forward_seconds")}
    return {"latencies": {k: sorted(v) for k, v in latencies.items()}, "errors": errors, "seconds": elapsed,
            "batching": batching, "by_kind": {k: sorted(v) for k, v in by_kind.items()}}


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
    rows = []
    for config in [c.strip() for c in args.configs.split(";") if c.strip()]:
        options = shlex.split(config) + [o for option in args.server_option for o in shlex.split(option)]
        max_upload_mb = float(dict(zip(options, options[1:])).get("--max_upload_mb", 20))
        kinds = request_kinds(args, max_upload_mb)
        log = Path(f"serve_load_{len(rows)}.log").resolve()
        with ServerProcess(args.model, *options, "--log_level", "warning", log_path=log) as server:
            result = asyncio.run(load(server.url, kinds, args.clients, args.requests, args.max_seconds))
            peak = peak_rss_mib(server.process.pid)
        log.unlink(missing_ok=True)
        good, refused, batching = result["latencies"]["ok"], result["latencies"]["4xx"], result["batching"]
        passes = max(1, batching["forward_batches"])
        rows.append({
            "config": config, "ok": len(good), "refused": len(refused), "errors": len(result["errors"]),
            "throughput": len(good) / result["seconds"],
            "p50": 1000 * percentile(good, 0.50), "p95": 1000 * percentile(good, 0.95),
            "refused_p50": 1000 * percentile(refused, 0.50), "refused_p95": 1000 * percentile(refused, 0.95),
            "peak_mib": peak, "passes": batching["forward_batches"],
            "pages_per_pass": batching["pages"] / passes, "windows_per_pass": batching["windows"] / passes,
            "by_kind": result["by_kind"], "forward_busy": batching["forward_seconds"] / result["seconds"],
            "forward_ms_per_page": 1000 * batching["forward_seconds"] / max(1, batching["pages"]),
        })
        if result["errors"]:
            print(f"errors ({config}): {result['errors'][:20]}", file=sys.stderr)
    kind = " + ".join(k for k, on in (("words JSON", args.words_json), ("upload (OCR)", args.document)) if on)
    print(f"\n{args.clients} clients, {args.requests} requests per row, {kind}{', hostile mix' if args.hostile else ''}, "
          f"model {args.model}\n")
    print("| server options | ok | 4xx | errors | good requests/s | good p50 / p95 ms | 4xx p50 / p95 ms "
          "| peak server RSS MiB | forward passes | pages per pass | windows per pass | forward ms per page "
          "| model busy |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        refused = f"{row['refused_p50']:.0f} / {row['refused_p95']:.0f}" if row["refused"] else "-"
        print(f"| `{row['config']}` | {row['ok']} | {row['refused']} | {row['errors']} | {row['throughput']:.2f} | "
              f"{row['p50']:.0f} / {row['p95']:.0f} | {refused} | {row['peak_mib']:.0f} | {row['passes']} | "
              f"{row['pages_per_pass']:.2f} | {row['windows_per_pass']:.2f} | {row['forward_ms_per_page']:.0f} | "
              f"{100 * row['forward_busy']:.0f}% |")
    if len(rows[0]["by_kind"]) > 1:
        print("\n| server options | request | answered | p50 ms | p95 ms |\n|---|---|---|---|---|")
        for row in rows:
            for kind, values in row["by_kind"].items():
                print(f"| `{row['config']}` | {kind} | {len(values)} | {1000 * percentile(values, 0.5):.0f} | "
                      f"{1000 * percentile(values, 0.95):.0f} |")
    return 1 if any(row["errors"] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
