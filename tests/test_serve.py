"""The HTTP service (layoutkit/serve.py): predict.py's JSON over HTTP for concurrent callers, with one corrupt
upload among them; limits answered with 4xx JSON; the forward batcher; the upload page in headless Chromium."""

import base64
import io
import json
import shutil
import threading
import time
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
    from layoutkit import predict

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

    from layoutkit.batching import WindowBatcher

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
    from layoutkit.batching import WindowBatcher

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
