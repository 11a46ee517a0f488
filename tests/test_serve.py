"""The HTTP service (layoutkit/apps/serve.py): predict.py's JSON over HTTP for concurrent callers, with one corrupt
upload among them; limits answered with 4xx JSON, at once while OCR keeps the workers busy; warnings in the answer;
no uploaded byte on disk, even after a SIGKILL; SIGTERM drains and exits 0; the forward batcher; the upload page in
headless Chromium. Every server listens on 127.0.0.1 only and every test sends a bounded number of requests."""

import base64
import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from serve_helpers import HeadlessChromium, ServerProcess, find_chromium

SERVE_EXTRA = "the serve extra is not installed (pip install '.[serve]')"
for module in ("fastapi", "uvicorn", "python_multipart"):
    pytest.importorskip(module, reason=SERVE_EXTRA)
requests = pytest.importorskip("requests")

MAX_PIXELS = 3_000_000
SERVER_OPTIONS = ("--workers", 3, "--max_batch_size", 8, "--max_wait_ms", 30, "--max_upload_mb", 1,
                  "--max_pages", 2, "--max_image_pixels", MAX_PIXELS, "--log_level", "warning")


@pytest.fixture(scope="module")
def server(trained_ner_checkpoint, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with ServerProcess(trained_ner_checkpoint, *SERVER_OPTIONS, log_path=log) as running:
        yield running


def invoice_files(synthetic_invoices, count):
    annotations = sorted((synthetic_invoices / "annotations").glob("*.json"))[:count]
    return [(json.loads(a.read_text()), synthetic_invoices / "images" / json.loads(a.read_text())["image"])
            for a in annotations]


def without_source(result):
    return {key: value for key, value in result.items() if key != "source"}


def test_concurrent_requests_match_predict_py_and_survive_a_corrupt_upload(server, synthetic_invoices,
                                                                         trained_ner_checkpoint, tmp_path):
    invoices = invoice_files(synthetic_invoices, 4)
    uploads = [path for _, path in invoices[:1]]  # read by OCR on the server
    words = invoices[1:]  # words and boxes given, with the page image

    def post_file(path):
        with open(path, "rb") as handle:
            return requests.post(server.url + "/v1/extract", files={"file": (path.name, handle, "image/png")},
                                 timeout=120)

    def post_words(annotation, path):
        payload = {"words": annotation["words"], "boxes": annotation["boxes"],
                   "image": base64.b64encode(path.read_bytes()).decode()}
        return requests.post(server.url + "/v1/extract", json=payload, timeout=120)

    def post_corrupt():
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
        return requests.post(server.url + "/v1/extract", files={"file": ("broken.png", data, "image/png")},
                             timeout=120)

    jobs = [(post_file, (p,)) for p in uploads] + [(post_words, w) for w in words]
    jobs.insert(1, (post_corrupt, ()))
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: job[0](*job[1]), jobs))
    corrupt = answers.pop(1)
    assert corrupt.status_code == 422, corrupt.text
    assert "broken.png: not a readable image" in corrupt.json()["error"]["message"]
    assert all(answer.status_code == 200 for answer in answers), [a.text[:300] for a in answers]

    # predict.py on the same documents (its main(), in this process): the same JSON, the source being the upload's
    # name rather than a path.
    from layoutkit.apps import predict

    folder = tmp_path / "uploads"
    folder.mkdir()
    for path in uploads:
        shutil.copy(path, folder / path.name)
    assert predict.main(["--model_name_or_path", str(trained_ner_checkpoint), "--input", str(folder),
                         "--output_dir", str(tmp_path / "out")]) == 0
    for path, answer in zip(uploads, answers[:1]):
        expected = json.loads((tmp_path / "out" / f"{path.stem}.json").read_text())
        assert answer.json()["source"] == path.name
        assert without_source(answer.json()) == without_source(expected)
    for number, ((annotation, path), answer) in enumerate(zip(words, answers[1:])):
        words_json = tmp_path / f"words{number}.json"
        words_json.write_text(json.dumps({"words": annotation["words"], "boxes": annotation["boxes"]}))
        output = tmp_path / f"out{number}"
        assert predict.main(["--model_name_or_path", str(trained_ner_checkpoint), "--input", str(path),
                             "--words_json", str(words_json), "--output_dir", str(output)]) == 0
        expected = json.loads((output / f"{path.stem}.json").read_text())
        assert without_source(answer.json()) == without_source(expected)

    health = requests.get(server.url + "/health", timeout=10).json()
    assert health["status"] == "ok" and health["batching"]["pages"] >= len(answers)


def png_bytes(size, frames=1):
    from PIL import Image

    buffer = io.BytesIO()
    pages = [Image.new("RGB", size, "white") for _ in range(frames)]
    if frames > 1:
        pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:])
    else:
        pages[0].save(buffer, format="PNG")
    return buffer.getvalue()


def test_limits_and_bad_requests_get_4xx_json(server, synthetic_invoices):
    url = server.url + "/v1/extract"
    too_big = requests.post(url, files={"file": ("big.png", b"\0" * 1_100_000, "image/png")}, timeout=30)
    assert too_big.status_code == 413
    assert too_big.json()["error"]["option"] == "--max_upload_mb"

    huge = requests.post(url, files={"file": ("huge.png", png_bytes((2000, 2000)), "image/png")}, timeout=30)
    assert huge.status_code == 413, huge.text
    assert huge.json()["error"]["option"] == "--max_image_pixels"
    assert "huge.png" in huge.json()["error"]["message"] and "layoutkit-serve" not in huge.text

    pages = requests.post(url, files={"file": ("three.tif", png_bytes((200, 100), frames=3), "image/tiff")},
                          timeout=30)
    assert pages.status_code == 413 and pages.json()["error"]["option"] == "--max_pages"

    text = requests.post(url, files={"file": ("notes.txt", b"hello", "text/plain")}, timeout=30)
    assert text.status_code == 415
    assert requests.post(url, data=b"hello", headers={"content-type": "text/plain"}, timeout=30).status_code == 415

    # A LayoutLMv3 reads the page image: words without it are refused, as are mismatched words and boxes.
    no_image = requests.post(url, json={"words": ["a"], "boxes": [[0, 0, 5, 5]], "width": 10, "height": 10},
                             timeout=30)
    assert no_image.status_code == 422 and "reads the page image" in no_image.json()["error"]["message"]
    mismatch = requests.post(url, json={"words": ["a", "b"], "boxes": [[0, 0, 5, 5]]}, timeout=30)
    assert mismatch.status_code == 422 and "2 words but 1 boxes" in mismatch.json()["error"]["message"]
    bad_json = requests.post(url, data=b"{", headers={"content-type": "application/json"}, timeout=30)
    assert bad_json.status_code == 422

    model = requests.get(server.url + "/v1/model", timeout=10).json()
    assert model["model_type"] == "layoutlmv3" and "B-total" in model["labels"]
    assert model["preprocessing"]["max_seq_length"] == 128 and model["limits"]["max_pages"] == 2
    assert requests.get(server.url + "/health", timeout=10).json()["status"] == "ok"


def test_window_batcher_fills_one_forward_batch_from_several_callers():
    import torch

    from layoutkit.apps.serve_batching import WindowBatcher

    batches = []

    def run_windows(windows, batch_size, mixed_precision):
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            batches.append([w["id"] for w in chunk])
            ids = torch.tensor([[w["id"]] for w in chunk])
            yield {"word_ids": ids}, ids.float() * 10

    batcher = WindowBatcher(run_windows, max_batch_size=4, max_wait_ms=300)
    results = {}

    def caller(name, ids):
        results[name] = batcher.submit([{"id": i} for i in ids]).result(timeout=10)

    threads = [threading.Thread(target=caller, args=(n, ids)) for n, ids in (("a", [1, 2]), ("b", [3]), ("c", [4, 5]))]
    for thread in threads:
        thread.start()
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    batcher.close()
    # The three pages (5 windows) run as two forward batches of at most 4 windows; each caller gets its own rows.
    assert sorted(len(b) for b in batches) == [1, 4] and sum(batches, []) == [1, 2, 3, 4, 5]
    for name, ids in (("a", [1, 2]), ("b", [3]), ("c", [4, 5])):
        rows = torch.cat([positions["word_ids"] for positions, _ in results[name]]).flatten().tolist()
        logits = torch.cat([logits for _, logits in results[name]]).flatten().tolist()
        assert rows == ids and logits == [10.0 * i for i in ids]
    assert batcher.stats["largest_batch_pages"] >= 2


def test_window_batcher_failure_fails_only_its_batch():
    from layoutkit.apps.serve_batching import WindowBatcher

    def run_windows(windows, batch_size, mixed_precision):
        if any(w.get("poison") for w in windows):
            raise RuntimeError("bad batch")
        yield {}, [0] * len(windows)

    batcher = WindowBatcher(run_windows, max_batch_size=4, max_wait_ms=0)
    with pytest.raises(RuntimeError, match="bad batch"):
        batcher.submit([{"poison": True}]).result(timeout=10)
    assert len(batcher.submit([{}]).result(timeout=10)) == 1
    batcher.close()


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_upload_page_shows_the_drawn_page_and_fields_in_chromium(server, synthetic_invoices, tmp_path):
    """The page at / uploads a sample invoice chosen in its file input (DevTools DOM.setFileInputFiles, as a user
    would), then shows the API's fields as table rows and the page as the service draws it (?draw=page: the same
    drawing as predict --draw), its entity boxes in their field type's colour."""
    pytest.importorskip("aiohttp")
    _, invoice = invoice_files(synthetic_invoices, 1)[0]

    async def upload_and_read(session):
        await session.wait_for("document.readyState === 'complete' && !!document.getElementById('file')")
        root = await session.send("DOM.getDocument")
        node = await session.send("DOM.querySelector", nodeId=root["root"]["nodeId"], selector="#file")
        await session.send("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(invoice)])
        state = await session.wait_for(
            "['done', 'error'].includes(document.getElementById('status').dataset.state) && "
            "document.getElementById('status').dataset.state", timeout=120)
        rendered = json.loads(await session.evaluate("""JSON.stringify({
            status: document.getElementById('status').textContent,
            rows: [...document.querySelectorAll('#fields tr')].map(r => [r.dataset.field,
                    r.querySelector('.value').textContent, r.querySelector('.swatch').style.background]),
            images: [...document.querySelectorAll('#pages img')].map(i => ({
                width: i.naturalWidth, height: i.naturalHeight, shown: i.getBoundingClientRect().width})),
            result: window.lastResult})"""))
        entity = rendered["result"]["entities"][0]
        x, y = entity["box"][0], (entity["box"][1] + entity["box"][3]) // 2
        # a pixel on the left edge of the first entity's box, read from the page's image as displayed
        rendered["edge"] = await session.evaluate(f"""(() => {{
            const image = document.querySelector('#pages img');
            const canvas = document.createElement('canvas');
            canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
            const context = canvas.getContext('2d');
            context.drawImage(image, 0, 0);
            return Array.from(context.getImageData({x}, {y}, 1, 1).data);
        }})()""")
        return state, rendered

    with HeadlessChromium(server.url + "/", tmp_path / "profile") as browser:
        state, rendered = browser.run(upload_and_read)
    assert state == "done", rendered["status"]
    result = rendered["result"]
    assert result["source"] == invoice.name and result["fields"], "the tiny model predicts some fields"
    fields = []
    for name, field in result["fields"].items():
        values = [value["text"] for value in field["values"]] if field.get("multiple") else [field["value"]]
        fields += [[name, value] for value in values]
    assert [row[:2] for row in rendered["rows"]] == fields
    from PIL import Image

    # One drawing per page: the page at its pixels with the legend below, shown on the page.
    with Image.open(invoice) as image:
        page_width, page_height = image.size
    assert len(rendered["images"]) == len(result["pages"]) == len(result["drawings"]) == 1
    assert rendered["images"][0]["width"] == page_width and rendered["images"][0]["height"] > page_height
    assert rendered["images"][0]["shown"] > 100
    # The drawing's colours: the entity box on the page and the table's swatch name the same colour.
    colour = result["colours"][result["entities"][0]["entity_group"]]
    assert tuple(rendered["edge"][:3]) == tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
    swatches = {row[0]: row[2] for row in rendered["rows"]}
    for name, swatch in swatches.items():
        assert swatch == "rgb({}, {}, {})".format(*(int(result["colours"][name][i:i + 2], 16) for i in (1, 3, 5)))



# ------------------------------------------------------------------------------------------- hostile requests
def huge_png_header(width, height):
    """A 1x1 PNG whose header (IHDR, with a valid CRC) declares width x height: a decompression bomb's header."""
    data = bytearray(png_bytes((1, 1)))
    struct.pack_into(">II", data, 16, width, height)  # after the signature (8), IHDR's length (4) and type (4)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def pdf_bytes(pages, size=(300, 200)):
    from PIL import Image

    buffer = io.BytesIO()
    images = [Image.new("RGB", size, "white") for _ in range(pages)]
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:])
    return buffer.getvalue()


def bad_requests(invoice_path):
    """(name, requests.post keyword arguments, expected status) of requests refused by the checks before the queue."""
    invoice = invoice_path.read_bytes()
    small_page = base64.b64encode(png_bytes((100, 50))).decode()
    return [
        ("truncated png", {"files": {"file": ("cut.png", invoice[: len(invoice) // 2], "image/png")}}, 422),
        ("random bytes", {"files": {"file": ("noise.png", bytes(range(256)) * 4, "image/png")}}, 422),
        ("text file", {"files": {"file": ("notes.txt", b"hello", "text/plain")}}, 415),
        ("huge png header", {"files": {"file": ("bomb.png", huge_png_header(20000, 20000), "image/png")}}, 413),
        ("too many pdf pages", {"data": pdf_bytes(5), "headers": {"content-type": "application/pdf"}}, 413),
        ("pdf without header", {"files": {"file": ("fake.pdf", b"garbage" * 50, "application/pdf")}}, 422),
        ("three-page tiff", {"files": {"file": ("three.tif", png_bytes((200, 100), frames=3), "image/tiff")}}, 413),
        ("oversized body", {"data": b"\0" * 1_100_000, "headers": {"content-type": "image/png"}}, 413),
        ("json does not parse", {"data": b"{", "headers": {"content-type": "application/json"}}, 422),
        ("box outside the page", {"json": {"words": ["a"], "boxes": [[0, 0, 500, 500]], "image": small_page}}, 422),
        ("box not numbers", {"json": {"words": ["a"], "boxes": [["0", 0, 5, 5]], "image": small_page}}, 422),
        ("words and boxes differ", {"json": {"words": ["a", "b"], "boxes": [[0, 0, 5, 5]], "image": small_page}}, 422),
    ]


def test_bad_requests_are_answered_at_once_while_ocr_keeps_the_workers_busy(server, synthetic_invoices):
    """Every refusal comes from the checks before the worker queue: p95 of the 4xx answers below 100 ms while more
    OCR uploads than workers are in flight (the issue's bound; measured here over a bounded number of requests)."""
    url = server.url + "/v1/extract"
    invoices = [path for _, path in invoice_files(synthetic_invoices, 3)]
    cases = bad_requests(invoices[0])
    for name, kwargs, status in cases:  # each refusal once, unloaded: the status and a message naming the problem
        answer = requests.post(url, timeout=30, **kwargs)
        assert answer.status_code == status, (name, answer.text)
        assert answer.json()["error"]["message"], name

    def post_ocr(path):  # a path-like file name: only its last part names the document
        with open(path, "rb") as handle:
            answer = requests.post(url, files={"file": ("../../etc/" + path.name, handle, "image/png")}, timeout=300)
        return answer, time.perf_counter()

    with ThreadPoolExecutor(len(invoices)) as load:
        ocr = [load.submit(post_ocr, path) for path in invoices]  # one OCR document per worker: seconds each
        time.sleep(1.0)  # the workers have taken their first documents
        started = time.perf_counter()
        latencies = []
        with requests.Session() as session:
            for round_ in range(4):
                for name, kwargs, status in cases:
                    sent = time.perf_counter()
                    answer = session.post(url, timeout=30, **kwargs)
                    latencies.append(time.perf_counter() - sent)
                    assert answer.status_code == status, (name, answer.text)
        finished = time.perf_counter()
        results = [future.result() for future in ocr]
    assert all(answer.status_code == 200 for answer, _ in results), [a.text[:200] for a, _ in results]
    assert {answer.json()["source"] for answer, _ in results} == {path.name for path in invoices}
    busy_until = max(done for _, done in results)
    assert busy_until > finished, "the OCR load lasted the whole measurement"
    latencies.sort()
    p50, p95 = latencies[len(latencies) // 2], latencies[int(0.95 * (len(latencies) - 1))]
    print(f"\n4xx under OCR load: {len(latencies)} answers in {finished - started:.2f} s, p50 {1000 * p50:.1f} ms, "
          f"p95 {1000 * p95:.1f} ms, max {1000 * latencies[-1]:.1f} ms")
    assert p95 < 0.1, f"p95 of the 4xx answers {1000 * p95:.0f} ms (p50 {1000 * p50:.0f} ms) under OCR load"


# ------------------------------------------------------------------------------------------- warnings
def test_warnings_reach_the_client_and_predict_py(server, synthetic_invoices, trained_ner_checkpoint, tmp_path):
    """Boxes normalised to 0-1 are accepted (status ok) with the dataset builder's warning in the answer's
    `warnings`, and in predict.py's JSON and summary.jsonl; a misspelt field is reported, not silently ignored."""
    from PIL import Image

    from layoutkit.apps import predict
    from layoutkit.pipelines.input_validation import normalised_boxes_problem

    annotation, image_path = invoice_files(synthetic_invoices, 1)[0]
    with Image.open(image_path) as image:
        width, height = image.size
    boxes = [[x0 / width, y0 / height, x1 / width, y1 / height] for x0, y0, x1, y1 in annotation["boxes"]]
    expected = f"boxes: {normalised_boxes_problem(boxes, width, height)}"  # the builder's report message

    payload = {"words": annotation["words"], "boxes": boxes, "segment_box": [],
               "image": base64.b64encode(image_path.read_bytes()).decode()}
    answer = requests.post(server.url + "/v1/extract", json=payload, timeout=120)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["status"] == "ok"
    assert {"page": 1, "message": expected} in result["warnings"]
    assert any(w["page"] == 1 and w["message"].startswith("unknown field 'segment_box' ignored")
               for w in result["warnings"]), result["warnings"]

    words_json = tmp_path / "words.json"
    words_json.write_text(json.dumps({"words": annotation["words"], "boxes": boxes}))
    output = tmp_path / "out"
    assert predict.main(["--model_name_or_path", str(trained_ner_checkpoint), "--input", str(image_path),
                         "--words_json", str(words_json), "--output_dir", str(output)]) == 0
    document = json.loads((output / f"{image_path.stem}.json").read_text())
    assert document["warnings"] == [{"page": 1, "message": expected}]
    (row,) = [json.loads(line) for line in (output / "summary.jsonl").read_text().splitlines()]
    assert row["status"] == "ok" and row["warnings"] == document["warnings"]

    clean = requests.post(server.url + "/v1/extract", timeout=120, json={
        "words": annotation["words"], "boxes": annotation["boxes"],
        "image": base64.b64encode(image_path.read_bytes()).decode()})
    assert clean.status_code == 200 and clean.json()["warnings"] == []


def test_warning_collectors_are_per_thread():
    """Documents read in concurrent worker threads each get their own warnings, however they interleave."""
    import warnings

    from layoutkit.pipelines.input_validation import collect_warnings, warn

    barrier = threading.Barrier(4)
    collected = {}

    def document(name):
        with collect_warnings() as messages:
            for step in range(3):
                barrier.wait(timeout=10)
                warn(f"{name} {step}")
        collected[name] = messages

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        threads = [threading.Thread(target=document, args=(f"doc{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert collected == {f"doc{i}": [f"doc{i} {step}" for step in range(3)] for i in range(4)}


# ------------------------------------------------------------------------------------------- files and signals
def files_holding(folder, needle: bytes):
    """The files under `folder` whose content holds `needle`."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                with open(path, "rb") as handle:
                    if needle in handle.read():
                        found.append(path)
            except OSError:
                pass
    return found


def dead_pid():
    """The process id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


SIGNAL_OPTIONS = ("--workers", 2, "--max_upload_mb", 5, "--max_pages", 4, "--log_level", "info")


def test_sigkill_mid_request_leaves_no_upload_after_restart(trained_ner_checkpoint, synthetic_invoices, tmp_path):
    """Uploads are read in memory: while OCR requests are in flight no file in the temporary directory holds their
    bytes; after a SIGKILL, the restarted server removes the dead process's private folder (and the per-upload
    folders earlier versions left) and keeps a live process's; a clean stop removes its own."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    invoices = [path for _, path in invoice_files(synthetic_invoices, 3)]
    uploads = [path.read_bytes() for path in invoices]
    noise = png_noise(900, 700)  # above 1 MB: the multipart parser spools it to a temporary file
    with ServerProcess(trained_ner_checkpoint, *SIGNAL_OPTIONS, log_path=tmp_path / "first.log",
                       env={"TMPDIR": str(temp)}) as first:
        (private,) = temp.glob(f"layoutkit-serve-{first.process.pid}-*")
        assert private.is_dir() and stat.S_IMODE(private.stat().st_mode) == 0o700

        def post(name, data):
            try:
                return requests.post(first.url + "/v1/extract", files={"file": (name, data, "image/png")},
                                     timeout=120).status_code
            except requests.ConnectionError:
                return "killed"

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(post, f"invoice{i}.png", data) for i, data in enumerate(uploads)]
            futures.append(pool.submit(post, "noise.png", noise))
            time.sleep(1.5)  # the workers are reading the first documents; the others wait in the queue
            for data in uploads + [noise]:
                assert files_holding(temp, data[-4096:]) == [], "an upload was written to the temporary directory"
            assert not all(future.done() for future in futures), "the requests were still in flight"
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(timeout=30)
            states = [future.result() for future in futures]
        assert "killed" in states, states

    # What a killed server (or an earlier version's per-upload folders) can leave, and a live process's folder.
    (private / "tess_page.png").write_bytes(uploads[0])  # as if tesseract's input had been written when killed
    stale = temp / f"layoutkit-serve-{dead_pid()}-abc123"
    stale.mkdir()
    (stale / "document.png").write_bytes(uploads[1])
    legacy = temp / "layoutkit-serve-k2x_9qzp"
    legacy.mkdir()
    (legacy / "document.png").write_bytes(uploads[2])
    alive = temp / f"layoutkit-serve-{os.getpid()}-live01"
    alive.mkdir()

    with ServerProcess(trained_ner_checkpoint, *SIGNAL_OPTIONS, "--shutdown_timeout", 1,
                       log_path=tmp_path / "second.log", env={"TMPDIR": str(temp)}) as second:
        for data in uploads + [noise]:
            assert files_holding(temp, data[-4096:]) == []
        assert not private.exists() and not stale.exists() and not legacy.exists() and alive.is_dir()
        (own,) = temp.glob(f"layoutkit-serve-{second.process.pid}-*")
        assert "removed 3 temporary folder(s)" in second.read_log()
        # SIGTERM while a document is read, with --shutdown_timeout 1: the client gets a 503 (send it again), the
        # process exits 0 without waiting for the OCR, and its folder is removed.
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(requests.post, second.url + "/v1/extract", timeout=120,
                                 files={"file": ("invoice.png", uploads[0], "image/png")})
            time.sleep(1.0)
            second.process.send_signal(signal.SIGTERM)
            assert second.process.wait(timeout=30) == 0, second.read_log()
            assert answer.result(timeout=60).status_code == 503
        # (Whether the page's OCR thread was still running when the service closed, and so was abandoned, depends on
        # how fast OCR is; the client's 503 and the exit code above are the contract.)
    assert not own.exists()
    assert sorted(path.name for path in temp.iterdir()) == [alive.name]


def png_noise(width, height):
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sigterm_drains_the_request_in_flight_and_exits_0(trained_ner_checkpoint, synthetic_invoices, tmp_path):
    """SIGTERM during a request: new connections are refused, the request gets its full answer, the process exits
    0 and its private temporary folder is gone."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    invoices = [path for _, path in invoice_files(synthetic_invoices, 2)]
    from PIL import Image

    pages = [Image.open(path).convert("RGB") for path in invoices]
    buffer = io.BytesIO()
    pages[0].save(buffer, format="TIFF", save_all=True, append_images=pages[1:], compression="tiff_deflate")  # 2 pages
    with ServerProcess(trained_ner_checkpoint, *SIGNAL_OPTIONS, "--shutdown_timeout", 120,
                       log_path=tmp_path / "server.log", env={"TMPDIR": str(temp)}) as running:
        (private,) = temp.glob(f"layoutkit-serve-{running.process.pid}-*")
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(requests.post, running.url + "/v1/extract", timeout=300,
                                 files={"file": ("two.tif", buffer.getvalue(), "image/tiff")})
            time.sleep(1.5)
            assert not answer.done()
            running.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(requests.ConnectionError):  # no longer accepting
                requests.get(running.url + "/health", timeout=5)
            result = answer.result(timeout=300)
        assert result.status_code == 200, result.text
        assert [page["page"] for page in result.json()["pages"]] == [1, 2]
        assert running.process.wait(timeout=60) == 0, running.read_log()
    assert not private.exists() and list(temp.iterdir()) == []
    assert "Waiting for connections to close" in running.read_log() or "Shutting down" in running.read_log()


def test_draw_option_returns_the_pages_drawn(server, synthetic_invoices):
    """?draw=page adds one PNG data URL per page (what predict --draw writes) and the field colours; without it the
    JSON is predict.py's, with no drawing; an unknown value is a 422."""
    annotation, path = invoice_files(synthetic_invoices, 1)[0]
    payload = {"words": annotation["words"], "boxes": annotation["boxes"],
               "image": base64.b64encode(path.read_bytes()).decode()}
    url = server.url + "/v1/extract"
    plain = requests.post(url, json=payload, timeout=120).json()
    drawn = requests.post(url + "?draw=page", json=payload, timeout=120).json()
    assert "drawings" not in plain and {k: v for k, v in drawn.items() if k not in ("drawings", "colours")} == plain
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert len(drawn["drawings"]) == 1 and drawn["drawings"][0].startswith(prefix)
    drawing = Image.open(io.BytesIO(base64.b64decode(drawn["drawings"][0][len(prefix):])))
    with Image.open(path) as page:
        assert drawing.width == page.width and drawing.height > page.height
    assert set(drawn["colours"]) >= {e["entity_group"] for e in drawn["entities"]}
    assert requests.post(url + "?draw=yes", json=payload, timeout=120).status_code == 422
