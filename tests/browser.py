"""Headless Chromium for tests, driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no
WebDriver, no websocket client, nothing but the system's ``chromium`` (Debian package ``chromium``)."""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHECK = """JSON.stringify({
  images: document.images.length,
  broken: Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
  verdict: (() => { const v = document.getElementById('verdict');
                    if (!v) return null;
                    const r = v.getBoundingClientRect(); return [r.top, r.bottom, v.innerText]; })(),
  height: window.innerHeight})"""


def find_chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


class Chromium:
    """``with Chromium() as c: c.load(path)`` -> console errors, page checks (``CHECK``)."""

    def __init__(self, width: int = 1280, height: int = 800, timeout: float = 60.0):
        self.width, self.height, self.timeout, self._id = width, height, timeout, 0

    def __enter__(self):
        self._profile = tempfile.TemporaryDirectory()
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # the protocol pipes must be fds 3 (read) and 4 (write) in the browser: move them out of the way first
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 20)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 20)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def child():  # os.dup2's copies are inheritable; every other fd of ours is close-on-exec (PEP 446)
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        self.proc = subprocess.Popen(
            [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             "--allow-file-access-from-files", "--no-first-run", "--disable-extensions",
             f"--user-data-dir={self._profile.name}", f"--window-size={self.width},{self.height}", "about:blank"],
            close_fds=False, preexec_fn=child, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(high_r)
        os.close(high_w)
        self._buffer, self.events = b"", []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable"):
            self.call(method, session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height,
                  deviceScaleFactor=1, mobile=False)
        return self

    def __exit__(self, *exc):
        try:
            self._send("Browser.close", {})
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome)
        os.close(self._from_chrome)
        self._profile.cleanup()

    def _send(self, method: str, params: dict, session: bool = False) -> int:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_chrome, json.dumps(message).encode() + b"\0")
        return self._id

    def _next(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the protocol pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, **params) -> dict:
        sent, deadline = self._send(method, params, session), time.monotonic() + self.timeout
        while True:
            message = self._next(deadline)
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for message in self.events:
            if message.get("method") == method:
                return message
        while True:
            message = self._next(deadline)
            self.events.append(message)
            if message.get("method") == method:
                return message

    def load(self, path: Path) -> dict:
        """Open ``path``, wait for its load event; returns ``CHECK``'s result plus ``errors`` (console errors,
        uncaught exceptions, failed resource loads)."""
        self.events = []
        self.call("Page.navigate", session=True, url=Path(path).resolve().as_uri())
        self.wait_event("Page.loadEventFired")
        result = self.call("Runtime.evaluate", session=True, expression=CHECK, returnByValue=True)
        checks = json.loads(result["result"]["value"])
        errors = []
        for m in self.events:
            p = m.get("params", {})
            if m.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(" ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif m.get("method") == "Runtime.exceptionThrown":
                errors.append(p["exceptionDetails"].get("text", "exception"))
            elif m.get("method") == "Log.entryAdded" and p["entry"].get("level") == "error":
                errors.append(f"{p['entry'].get('text')} {p['entry'].get('url', '')}")
        return {**checks, "errors": errors}
