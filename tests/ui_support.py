"""The web page's test helpers: headless Chromium from Debian's packages driven by selenium,
a TCP relay whose connections a test can cut (a network drop), realistic events, and the
screenshot that `make screenshots` writes (`python -m tests.ui_support PATH`).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `support`, also under python -m

from logd._pb.logd_pb2 import Msg
from support import LogdProcess, start_logd, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return (
                f"{path} is missing (apt-get install chromium chromium-driver; make unit does it)"
            )
    return None


def require_browser() -> None:
    """Skip when Chromium or selenium is missing, except under CI, where that fails."""
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the browser tests must run under CI: {reason}")
    pytest.skip(reason)


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """Headless Chromium with its console log kept (driver.get_log("browser"))."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    profile = tempfile.mkdtemp(prefix="logd-ui-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]


def sign_in(driver: Any, url: str, secret: str) -> None:
    """Open the page and sign in with `secret` (the form, as a person does)."""
    from selenium.webdriver.common.by import By

    driver.get(url)
    field = wait_for(lambda: _shown(driver, "secret"))
    field.clear()
    field.send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()


def _shown(driver: Any, element_id: str) -> Any:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.ID, element_id)
    return found[0] if found and found[0].is_displayed() else None


def row_texts(driver: Any) -> list[str]:
    """The txt of the event rows drawn (those in view), top (newest) first."""
    script = "return [...document.querySelectorAll('#list .row:not(.marker) .txt')]"
    return list(driver.execute_script(script + ".map(e => e.textContent)"))


def markers(driver: Any) -> list[str]:
    """The markers the list holds (gaps, losses), drawn or scrolled out of view."""
    return list(
        driver.execute_script("return state.items.filter(i => i.marker).map(i => i.marker)")
    )


class Relay:
    """A TCP relay on a free 127.0.0.1 port to logd's HTTP port: cut() ends every open
    connection (the network dropped) and holding() refuses new ones meanwhile."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refuse = threading.Event()
        self.closed = False
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refuse.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:  # logd is gone: so is this connection
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Cut every connection and refuse new ones until the block ends."""
        self.refuse.set()
        with self.lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        try:
            yield
        finally:
            self.refuse.clear()

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            for sock in self.conns:
                sock.close()


def realistic_events(now_ns: int, minutes: int = 30, seed: int = 7) -> list[Msg]:
    """Several services and levels over the last `minutes`, with an error burst in the
    last quarter (checkout's payment provider failing)."""
    rng = random.Random(seed)  # noqa: S311  (made-up events, not secrets)
    services = {
        "billing-api": ["ChargeCard", "Refund", "Invoice"],
        "checkout": ["PlaceOrder", "Cart"],
        "auth": ["Login", "Refresh"],
        "search": ["Query"],
    }
    texts = {
        "INFO": ["charged card ending 4242", "order placed", "user signed in", "query served"],
        "DEBUG": ["cache hit", "token refreshed", "retrying upstream"],
        "WARN": ["slow card network (812 ms)", "cart near item limit", "rate limit at 80%"],
        "ERROR": ["payment provider timeout", "card declined: insufficient funds"],
    }
    events = []
    span_ns = minutes * 60 * 10**9
    burst = (now_ns - span_ns // 4, now_ns - span_ns // 4 + 90 * 10**9)
    # Traffic that grows toward now, and a burst of checkout errors.
    times = [now_ns - int(span_ns * rng.random() ** 1.3) for _ in range(1400)]
    times += [burst[0] + int((burst[1] - burst[0]) * rng.random()) for _ in range(250)]
    for i, t in enumerate(sorted(times)):
        in_burst = burst[0] <= t <= burst[1]
        lvl = (
            "ERROR"
            if in_burst and rng.random() < 0.7
            else rng.choice(["INFO"] * 12 + ["DEBUG"] * 5 + ["WARN"] * 2 + ["ERROR"])
        )
        svc = "checkout" if in_burst else rng.choice(list(services))
        msg = Msg(
            env="prod" if rng.random() < 0.8 else "staging",
            svc=svc,
            fn=rng.choice(services[svc]),
            lvl=LEVELS.index(lvl) + 1,
            txt=rng.choice(texts[lvl]),
            host=f"ip-10-0-1-{11 + i % 4}",  # four hosts, each one process
            pid=4100 + i % 4,
            attrs={"request_id": f"r-{i:05d}", "region": rng.choice(["eu-west-1", "us-east-1"])},
        )
        if lvl == "ERROR":
            msg.stack_trace = (
                "Traceback (most recent call last):\n"
                '  File "checkout/pay.py", line 88, in place_order\n'
                "    provider.charge(order)\n"
                "TimeoutError: payment provider did not answer in 5 s"
            )
            msg.http_method = 6  # POST
            msg.url = "/v1/orders"
            msg.response_status = 502
        msg.t.FromNanoseconds(t)
        events.append(msg)
    return events


def send_all(proc: LogdProcess, msgs: list[Msg], per_frame: int = 8) -> None:
    for i in range(0, len(msgs), per_frame):
        proc.write(*msgs[i : i + per_frame])
        if i % 400 == 0:
            time.sleep(0.005)  # the kernel's receive buffer keeps up


def screenshot(path: Path) -> None:
    """The page with realistic data, an error's detail open, as a PNG at `path`."""
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp:
        proc = start_logd(Path(tmp))
        try:
            msgs = realistic_events(time.time_ns())
            send_all(proc, msgs)
            wait_for(lambda: proc.info()["store"]["writes"] >= len(msgs))
            with chromium(1400, 900) as driver:
                sign_in(driver, proc.http_url + "/ui/?since=30m", proc.read_secret)
                shown = driver.find_element(By.ID, "shown")
                wait_for(lambda: shown.text.startswith("200 events"))
                wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#hist g.bucket"))
                driver.find_element(By.CSS_SELECTOR, "#list .row.lvl-ERROR").click()
                time.sleep(0.3)
                path.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(path))
        finally:
            proc.stop()


if __name__ == "__main__":
    if _missing():
        sys.exit(f"make screenshots: {_missing()}")
    screenshot(Path(sys.argv[1]))
    print(f"wrote {sys.argv[1]}")
