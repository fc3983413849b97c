"""The web page's live tail at 1,000 events/s: frames per second in headless Chromium.

A real `logd serve` and the C sender (bench/sender.c, one event per frame at 1,000
frames/s). The page is signed in and follows the live tail; a script counts
requestAnimationFrame callbacks over `--seconds` and the frames that took longer than
50 ms. The reference is the same page, in the same browser and run, with no events.
Medians of `--runs`. Also the page's first-load weight: the bytes of the responses of a
fresh load (index.html, app.js, app.css, icon.svg), as the browser's Resource Timing
reports them.

`python -m bench.ui_tail` (`make bench` runs it after the main table); `--smoke` checks the
harness in a few seconds (its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.procs import Load, LogdServer, Sender, wait_for
from bench.stats import median

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
RATE = 1000  # events per second, one per frame

# Counts animation frames for `seconds`; a frame "long" when its gap passes 50 ms.
COUNT_FRAMES = """
const [seconds, done] = arguments;
let frames = 0, long = 0, last = performance.now();
const end = last + seconds * 1000;
function tick(now) {
  frames += 1;
  if (now - last > 50) long += 1;
  last = now;
  if (now < end) requestAnimationFrame(tick);
  else done({fps: frames / seconds, long, held: state.items.length,
              drawn: document.querySelectorAll('#list .row').length});
}
requestAnimationFrame(tick);
"""
WEIGHT = """
const nav = performance.getEntriesByType('navigation')[0];
const parts = [nav, ...performance.getEntriesByType('resource')];
return parts.map(e => [e.name.split('/').pop() || 'index.html', e.transferSize, e.encodedBodySize]);
"""


@contextmanager
def chromium() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="logd-bench-chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def open_live(driver: Any, server: LogdServer) -> list[list[Any]]:
    """A fresh load of the page (its weight), then the sign-in and the live tail."""
    from selenium.webdriver.common.by import By

    driver.get(server.http_url + "/ui/")
    wait_for(lambda: driver.execute_script("return document.readyState") == "complete", 10, "load")
    weight: list[list[Any]] = driver.execute_script(WEIGHT)
    driver.find_element(By.ID, "secret").send_keys(server.read_secret)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button[type=submit]").click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#conn.on"), 10, "the live tail")
    return weight


def frames(driver: Any, seconds: float) -> dict[str, Any]:
    """Frames per second, and the renderer's main-thread time per second by kind
    (Chromium's Performance.getMetrics, in ms/s)."""
    driver.execute_cdp_cmd("Performance.enable", {})
    before = _metrics(driver)
    driver.set_script_timeout(seconds + 30)
    result: dict[str, Any] = driver.execute_async_script(COUNT_FRAMES, seconds)
    after = _metrics(driver)
    result["busy_ms_s"] = {k: (after[k] - before[k]) * 1000 / seconds for k in MAIN_THREAD}
    return result


MAIN_THREAD = ("TaskDuration", "ScriptDuration", "LayoutDuration", "RecalcStyleDuration")


def _metrics(driver: Any) -> dict[str, float]:
    answer = driver.execute_cdp_cmd("Performance.getMetrics", {})
    return {m["name"]: float(m["value"]) for m in answer["metrics"]}


def measure(sender: Path, runs: int, seconds: float) -> dict[str, Any]:
    from selenium.webdriver.common.by import By

    idle: list[dict[str, Any]] = []
    busy: list[dict[str, Any]] = []
    paused: list[dict[str, Any]] = []
    lost: list[int] = []
    weight: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(runs):
            with LogdServer(Path(tmp), cpu=None, flags=[]) as server, chromium() as driver:
                weight = open_live(driver, server)
                idle.append(frames(driver, seconds))
                load = Load(rate=RATE, seconds=2 * seconds + 3, error_every=50, svc="api")
                run = Sender(sender, server.udp_port, server.write_secret, load, None)
                try:
                    wait_for(lambda: server.info()["store"]["writes"] > RATE, 10, "events")
                    before = server.info()["tail"]["dropped"]
                    busy.append(frames(driver, seconds))
                    lost.append(server.info()["tail"]["dropped"] - before)
                    driver.find_element(By.ID, "pause").click()  # read, held, not drawn
                    paused.append(frames(driver, seconds))
                    run.result()
                finally:
                    run.stop()
    return {"idle": idle, "busy": busy, "paused": paused, "lost": lost, "weight": weight}


def report(result: dict[str, Any]) -> str:
    idle_fps = median([r["fps"] for r in result["idle"]])
    lines = [
        "| web page, live tail | frames/s (median) | frames > 50 ms | events held / rows drawn "
        "| main thread ms/s: all, script, layout, style | ratio |",
        "|---|---|---|---|---|---|",
        _row("no events (reference)", result["idle"], idle_fps),
        _row(f"{RATE:,} events/s", result["busy"], idle_fps),
        _row(f"{RATE:,} events/s, paused (read, held, not drawn)", result["paused"], idle_fps),
        f"events the page's tail lost (server's tail.dropped): {sum(result['lost'])}",
    ]
    names = {"index.html", "app.js", "app.css", "icon.svg"}
    parts = [w for w in result["weight"] if w[0] in names]
    transfer = sum(w[1] for w in parts)
    body = sum(w[2] for w in parts)
    each = ", ".join(f"{w[0]} {w[2]:,}" for w in parts)
    lines.append(f"first load: {transfer:,} bytes transferred ({body:,} bytes of bodies: {each})")
    return "\n".join(lines)


def _row(name: str, runs: list[dict[str, Any]], idle_fps: float) -> str:
    fps = median([r["fps"] for r in runs])
    busy = " / ".join(f"{median([r['busy_ms_s'][k] for r in runs]):.0f}" for k in MAIN_THREAD)
    held = f"{median([r['held'] for r in runs]):.0f} / {median([r['drawn'] for r in runs]):.0f}"
    long = median([r["long"] for r in runs])
    return f"| {name} | {fps:.1f} | {long:.0f} | {held} | {busy} | {fps / idle_fps:.2f} |"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_tail", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--smoke", action="store_true", help="one short run: checks the harness")
    parser.add_argument("--sender", type=Path, default=HERE / "build" / "sender")
    args = parser.parse_args()
    runs, seconds = (1, 1.0) if args.smoke else (args.runs, args.seconds)
    print(report(measure(args.sender, runs, seconds)))


if __name__ == "__main__":
    main()
