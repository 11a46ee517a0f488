"""Helpers of the service tests and the load benchmark: start `python -m layoutkit.apps.serve` on a free loopback
port in a subprocess, and drive a headless Chromium through the DevTools protocol."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, timeout: float) -> None:
    """Terminate a still-running process, killing it if it has not exited after `timeout` seconds."""
    if process and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess:
    """`python -m layoutkit.apps.serve --model MODEL ...` on 127.0.0.1, started and waited for (GET /health) on enter,
    stopped on exit; its log is kept in `log_path`. `env`: variables added to the server's environment (TMPDIR)."""

    def __init__(self, model, *options, log_path: Path, startup_timeout: float = 180, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "layoutkit.apps.serve", "--model", str(model), "--host", "127.0.0.1",
                        "--port", str(self.port), *map(str, options)]
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.extra_env = dict(env or {})
        self.process = None

    def __enter__(self):
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               **self.extra_env}
        self.log = open(self.log_path, "w", encoding="utf-8")
        self.process = subprocess.Popen(self.command, cwd=REPO_ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.read_log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the server did not answer /health within {self.startup_timeout} s:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-6000:]

    def __exit__(self, *exc):
        stop_process(self.process, timeout=20)
        self.log.close()


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class HeadlessChromium:
    """A headless Chromium opened on `url`, driven through its DevTools protocol (a websocket, aiohttp's client).
    Started in a fresh profile under `profile_dir` with remote debugging on a free loopback port."""

    def __init__(self, url: str, profile_dir: Path, binary: str | None = None):
        self.binary = binary or find_chromium()
        self.url = url
        self.profile_dir = profile_dir
        self.process = None

    def __enter__(self):
        self.port = free_port()
        self.process = subprocess.Popen(
            [self.binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-dev-shm-usage", f"--remote-debugging-port={self.port}", "--remote-debugging-address=127.0.0.1",
             f"--user-data-dir={self.profile_dir}", self.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as response:
                    pages = [t for t in json.loads(response.read()) if t.get("type") == "page"]
                if pages:
                    self.websocket_url = pages[0]["webSocketDebuggerUrl"]
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        self.__exit__(None, None, None)
        raise RuntimeError("Chromium's DevTools endpoint did not come up within 60 s")

    def __exit__(self, *exc):
        stop_process(self.process, timeout=10)

    def run(self, script):
        """Run `script(session)` (a coroutine function) with a DevTools session on the page."""
        return asyncio.run(self._run(script))

    async def _run(self, script):
        import aiohttp

        async with aiohttp.ClientSession() as http, http.ws_connect(self.websocket_url, max_msg_size=0) as socket_:
            return await script(DevToolsSession(socket_))


class DevToolsSession:
    """Commands over one DevTools websocket: `await session.send("DOM.getDocument")`, `evaluate(js)`."""

    def __init__(self, websocket):
        self.websocket = websocket
        self.next_id = 0

    async def send(self, method: str, **params):
        self.next_id += 1
        await self.websocket.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads((await self.websocket.receive()).data)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60):
        """Poll `expression` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = await self.evaluate(expression)
            if value:
                return value
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{expression} stayed false for {timeout} s")
