"""GET /ui/ in a real browser: headless Chromium (Debian's chromium + chromium-driver,
driven by selenium) against a real `logd serve`, events sent over real UDP.

Each test writes its events under its own env and opens the page filtered to it, so the
tests share one server and one browser without seeing each other's events.
"""

from __future__ import annotations

import json
import re
import struct
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from logd._pb.logd_pb2 import Msg
from logd.logger import Logger
from support import LogdProcess, start_logd, wait_for
from ui_support import (
    Relay,
    chromium,
    console_errors,
    markers,
    require_browser,
    row_texts,
    screenshot,
    sign_in,
)

pytestmark = [pytest.mark.functional, pytest.mark.timeout(120)]

WRONG = "not-the-read-secret-but-32-bytes-long-0000"
HOSTILE = [
    "<img src=x onerror=\"document.title='pwned';window.pwned=1\">",
    "<script>document.title='pwned';window.pwned=1</script>",
    "javascript:document.title='pwned'",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LogdProcess]:
    # A low failure limit, so that the throttled sign-in is reached in a few tries.
    proc = start_logd(tmp_path_factory.mktemp("ui"), env={"LOGD_AUTH_FAIL_LIMIT": "3"})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def browser(server: LogdProcess) -> Iterator[Any]:
    require_browser()  # the tests of headers and redirects run without one
    with chromium() as driver:
        yield driver


def by_css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def open_page(driver: Any, server: LogdProcess, query: str = "", base: str = "") -> None:
    """A fresh tab state (nothing in sessionStorage), then the sign-in as a person does it."""
    driver.get((base or server.http_url) + "/ui/")
    driver.execute_script("sessionStorage.clear()")
    driver.get_log("browser")  # start each test with an empty console
    sign_in(driver, (base or server.http_url) + "/ui/" + query, server.read_secret)
    wait_for(lambda: by_css(driver, "#app:not([hidden])"))


def write(server: LogdProcess, env: str, *texts: str, svc: str = "api", **fields: Any) -> None:
    server.write(*(Msg(env=env, svc=svc, lvl=3, txt=text, **fields) for text in texts))


def stored(server: LogdProcess, env: str, n: int) -> None:
    wait_for(lambda: len(server.query(env=env, limit="10000")) >= n)


def url_params(driver: Any) -> dict[str, list[str]]:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(driver.current_url).query)


def test_the_page_loads_and_lists_the_newest_events_with_no_console_error(
    server: LogdProcess, browser: Any
) -> None:
    write(server, "t-load", *(f"event {i}" for i in range(5)))
    stored(server, "t-load", 5)
    open_page(browser, server, "?env=t-load")
    wait_for(lambda: row_texts(browser) == [f"event {i}" for i in reversed(range(5))])
    assert browser.title == "logd"
    assert console_errors(browser) == []


def test_a_wrong_secret_is_refused_and_then_throttled(server: LogdProcess, browser: Any) -> None:
    browser.get(server.http_url + "/ui/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    message = lambda: by_css(browser, "#signin-msg")[0].text  # noqa: E731
    sign_in(browser, server.http_url + "/ui/", WRONG)
    wait_for(lambda: "refused this secret" in message())
    assert by_css(browser, "#app[hidden]"), "the page shows nothing before a good secret"
    for _ in range(4):  # past LOGD_AUTH_FAIL_LIMIT=3
        sign_in(browser, server.http_url + "/ui/", WRONG)
        time.sleep(0.2)
    wait_for(lambda: "Too many failed sign-ins" in message())
    assert "refuses more for" in message()
    # The only console errors are the browser's own notes of the refused requests.
    for entry in console_errors(browser):
        assert "status of 401" in entry["message"] or "status of 429" in entry["message"]
    assert browser.execute_script("return sessionStorage.length") == 0


def test_an_event_sent_over_udp_appears_in_the_live_list_within_a_second(
    server: LogdProcess, browser: Any
) -> None:
    open_page(browser, server, "?env=t-live")
    wait_for(lambda: by_css(browser, "#conn.on"))
    log = Logger(
        env="t-live",
        svc="api",
        host="127.0.0.1",
        port=server.udp_addr[1],
        write_secret=server.write_secret,
    )
    try:
        log.info("hello from the logger", request_id="r-1")
        log.flush()
        wait_for(lambda: row_texts(browser) == ["hello from the logger"], timeout=1.0)
    finally:
        log.close()
    assert console_errors(browser) == []


def test_pause_holds_the_list_and_counts_what_waits_resume_shows_it(
    server: LogdProcess, browser: Any
) -> None:
    open_page(browser, server, "?env=t-pause")
    wait_for(lambda: by_css(browser, "#conn.on"))
    write(server, "t-pause", "before")
    wait_for(lambda: row_texts(browser) == ["before"])
    by_css(browser, "#pause")[0].click()
    assert by_css(browser, "#pause")[0].text == "Resume"
    write(server, "t-pause", "one", "two", "three")
    wait_for(lambda: by_css(browser, "#waiting")[0].text == "3 waiting")
    assert row_texts(browser) == ["before"], "a paused list holds still"
    by_css(browser, "#pause")[0].click()
    wait_for(lambda: row_texts(browser) == ["three", "two", "one", "before"])
    assert by_css(browser, "#waiting")[0].text == ""


def test_the_histogram_bars_are_the_counts_of_hits(server: LogdProcess, browser: Any) -> None:
    base = (time.time_ns() // 60_000_000_000 - 30) * 60_000_000_000  # a whole minute
    msgs = []
    for i in range(120):
        msg = Msg(env="t-hist", svc="api", lvl=[3, 3, 4, 5][i % 4], txt=f"h{i}")
        msg.t.FromNanoseconds(base + i * 7 * 10**9)  # 14 minutes of events
        msgs.append(msg)
    for i in range(0, len(msgs), 10):
        server.write(*msgs[i : i + 10])
    stored(server, "t-hist", 120)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 10**9))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 10**9 + 15 * 60))
    params = {"env": "t-hist", "since": since, "until": until}
    open_page(browser, server, "?" + urllib.parse.urlencode(params))
    status, hits, _ = server.get("/hits", params | {"by": "lvl"})
    assert status == 200
    assert sum(b["total"] for b in hits["buckets"]) == 120
    script = (
        "return [...document.querySelectorAll('#hist g.bucket')]"
        ".map(g => ({t: g.dataset.t, total: Number(g.dataset.total),"
        " by: JSON.parse(g.dataset.by)}))"
    )
    drawn = wait_for(lambda: browser.execute_script(script))
    assert drawn == [
        {"t": b["t"], "total": b["total"], "by": b.get("by", {})} for b in hits["buckets"]
    ]
    # Error bars are drawn, in their own colour class, in the buckets that have errors.
    with_errors = sum(1 for b in hits["buckets"] if b.get("by", {}).get("ERROR"))
    assert len(by_css(browser, "#hist rect.b-ERROR")) == with_errors > 0


def test_clicking_a_bar_narrows_the_time_range(server: LogdProcess, browser: Any) -> None:
    base = (time.time_ns() // 60_000_000_000 - 20) * 60_000_000_000
    for i in range(10):
        msg = Msg(env="t-click", svc="api", lvl=3, txt=f"c{i}")
        msg.t.FromNanoseconds(base + i * 60 * 10**9 + 10**9)  # one a minute
        server.write(msg)
    stored(server, "t-click", 10)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 10**9))
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 10**9 + 600 - 1))
    open_page(browser, server, f"?env=t-click&since={since}&until={until}")
    wait_for(lambda: len(row_texts(browser)) == 10)
    buckets = wait_for(lambda: by_css(browser, "#hist g.bucket"))
    minute = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 10**9 + 180))
    fourth = next(g for g in buckets if g.get_attribute("data-t") == minute)
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).click(fourth.find_element("css selector", "rect.hit")).perform()
    wait_for(lambda: row_texts(browser) == ["c3"])
    params = url_params(browser)
    assert params["since"] == [minute.replace("Z", ".000Z")]
    _, hits, _ = server.get("/hits", {"env": "t-click", "since": since, "until": until})
    assert hits["step_s"] == 10
    assert params["until"] == [minute.replace(":00Z", ":09.999Z")]
    # Back to the whole range (the browser's history), then a drag over minutes 2 to 5.
    browser.back()
    wait_for(lambda: len(row_texts(browser)) == 10)

    def bar(minutes: int) -> Any:
        t = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 10**9 + 60 * minutes))
        g = wait_for(lambda: by_css(browser, f'#hist g.bucket[data-t="{t}"] rect.hit'))
        return g[0]

    chain = ActionChains(browser).click_and_hold(bar(2)).move_to_element(bar(4))
    chain.move_to_element(bar(5)).release().perform()
    wait_for(lambda: row_texts(browser) == ["c5", "c4", "c3", "c2"])


def test_the_histogram_follows_the_live_tail(server: LogdProcess, browser: Any) -> None:
    open_page(browser, server, "?env=t-follow&since=5m")
    wait_for(lambda: by_css(browser, "#conn.on"))
    drawn = "return [...document.querySelectorAll('#hist g.bucket')].map(g => g.dataset.by)"
    total = lambda: sum(  # noqa: E731
        json.loads(by).get(level, 0)
        for by in browser.execute_script(drawn)
        for level in ("INFO", "ERROR")
    )
    assert total() == 0
    write(server, "t-follow", "a", "b", "c")
    server.write(Msg(env="t-follow", svc="api", lvl=5, txt="bad"))
    wait_for(lambda: total() == 4, timeout=15)  # asked again every 2 s while events come
    assert len(by_css(browser, "#hist rect.b-ERROR")) == 1


def test_a_filter_narrows_the_list_and_the_url_never_holds_the_secret(
    server: LogdProcess, browser: Any
) -> None:
    write(server, "t-filter", "from api", svc="api")
    write(server, "t-filter", "from billing", svc="billing", attrs={"user": "ann"})
    write(server, "t-filter", "billing again", svc="billing", attrs={"user": "bob"})
    stored(server, "t-filter", 3)
    open_page(browser, server, "?env=t-filter")
    wait_for(lambda: len(row_texts(browser)) == 3)
    svc = by_css(browser, "#filters input[name=svc]")[0]
    svc.send_keys("billing")
    by_css(browser, "#filters input[name=attr]")[0].send_keys("user=ann")
    by_css(browser, "#filters button[type=submit]")[0].click()
    wait_for(lambda: row_texts(browser) == ["from billing"])
    assert url_params(browser) == {"env": ["t-filter"], "svc": ["billing"], "attr.user": ["ann"]}
    # The secret: in this tab's sessionStorage and the Authorization header, nowhere else.
    urls = browser.execute_script(
        "return [location.href, ...performance.getEntries().map(e => e.name)]"
    )
    assert urls
    assert not any(server.read_secret in u for u in urls)
    assert browser.execute_script("return localStorage.getItem('logd.readSecret')") is None
    # A shared link opens the same view.
    browser.get(browser.current_url)
    wait_for(lambda: row_texts(browser) == ["from billing"])
    assert by_css(browser, "#filters input[name=svc]")[0].get_attribute("value") == "billing"


def test_the_host_field_filters_on_the_writers_host(server: LogdProcess, browser: Any) -> None:
    write(server, "t-host", "from web-1", host="web-1", pid=11)
    write(server, "t-host", "from web-2", host="web-2", pid=12)
    stored(server, "t-host", 2)
    open_page(browser, server, "?env=t-host")
    wait_for(lambda: len(row_texts(browser)) == 2)
    by_css(browser, "#filters input[name=host]")[0].send_keys("web-2")
    by_css(browser, "#filters button[type=submit]")[0].click()
    wait_for(lambda: row_texts(browser) == ["from web-2"])
    assert url_params(browser) == {"env": ["t-host"], "host": ["web-2"]}


def test_older_events_page_back_with_before(server: LogdProcess, browser: Any) -> None:
    texts = [f"p{i:03d}" for i in range(250)]
    for i in range(0, 250, 25):
        write(server, "t-page", *texts[i : i + 25])
    stored(server, "t-page", 250)
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    open_page(browser, server, f"?env=t-page&until={until}")  # a search: no live tail
    shown = lambda: by_css(browser, "#shown")[0].text  # noqa: E731
    wait_for(lambda: shown() == "200 events")
    newest = row_texts(browser)
    assert newest == texts[::-1][: len(newest)]
    assert 10 < len(newest) < 40, "only the rows in view are drawn"
    assert scrolled_to_end(browser)[-1] == "p050"
    by_css(browser, "#older")[0].click()
    wait_for(lambda: shown() == "250 events")
    assert scrolled_to_end(browser)[-1] == "p000"
    assert by_css(browser, "#older")[0].get_attribute("disabled") is not None
    assert held_ids(browser) == sorted(held_ids(browser), key=int, reverse=True)


def scrolled_to_end(driver: Any) -> list[str]:
    driver.execute_script("const l = document.getElementById('list'); l.scrollTop = l.scrollHeight")
    time.sleep(0.1)  # the rows in view are drawn at the next animation frame
    return row_texts(driver)


def held_ids(driver: Any) -> list[str]:
    """The ids of the events the list holds (drawn or scrolled out of view)."""
    return list(driver.execute_script("return state.items.filter(i => i.id).map(i => i.id)"))


def test_hostile_text_renders_literally_and_runs_nothing(server: LogdProcess, browser: Any) -> None:
    server.write(
        Msg(
            env="t-xss",
            svc="api",
            lvl=5,
            txt=HOSTILE[0],
            stack_trace=HOSTILE[1],
            url=HOSTILE[2],
            attrs={"a": HOSTILE[1], "b": HOSTILE[2]},
        )
    )
    stored(server, "t-xss", 1)
    open_page(browser, server, "?env=t-xss")
    wait_for(lambda: row_texts(browser) == [HOSTILE[0]])
    by_css(browser, "#list .row")[0].click()
    detail = wait_for(lambda: by_css(browser, "#detail:not([hidden])"))[0]
    shown = browser.execute_script("return document.getElementById('detail').textContent")
    for text in HOSTILE:
        assert text in shown
    assert by_css(browser, "#detail pre.stack")[0].text == HOSTILE[1]
    assert (
        browser.execute_script("return document.querySelectorAll('#app img, #app script').length")
        == 0
    )
    assert browser.execute_script("return document.querySelectorAll('#app a').length") == 0
    time.sleep(0.3)  # an onerror would have fired by now
    assert browser.title == "logd"
    assert browser.execute_script("return window.pwned") is None
    assert detail.is_displayed()


def test_event_detail_shows_attrs_stack_http_fields_in_utc_or_local_time(
    server: LogdProcess, browser: Any
) -> None:
    msg = Msg(
        env="t-detail",
        svc="billing",
        fn="Charge",
        lvl=5,
        txt="card declined",
        stack_trace="Traceback:\n  line 1\nValueError: no",
        http_method=6,
        url="/v1/charge",
        response_status=402,
        attrs={"request_id": "r-9", "user": "ann"},
    )
    server.write(msg)
    stored(server, "t-detail", 1)
    open_page(browser, server, "?env=t-detail")
    wait_for(lambda: row_texts(browser) == ["card declined"])
    row = by_css(browser, "#list .row")[0]
    assert "lvl-ERROR" in row.get_attribute("class")
    row.click()
    wait_for(lambda: by_css(browser, "#detail:not([hidden])"))
    pairs = browser.execute_script(
        "return [...document.querySelectorAll('#detail dt')].map(dt => "
        "[dt.textContent, dt.nextElementSibling.firstChild.textContent])"
    )
    fields = dict(pairs)
    assert fields["method"] == "POST"
    assert fields["url"] == "/v1/charge"
    assert fields["status"] == "402"
    assert fields["request_id"] == "r-9"
    assert fields["user"] == "ann"
    assert fields["level"] == "ERROR"
    assert by_css(browser, "#detail pre.stack")[0].text == msg.stack_trace
    utc = by_css(browser, "#list .row .t")[0].text
    assert utc.endswith("Z")
    by_css(browser, "#tz")[0].click()
    wait_for(lambda: not by_css(browser, "#list .row .t")[0].text.endswith("Z"))
    assert by_css(browser, "#tz")[0].text == "local time"
    by_css(browser, "#tz")[0].click()  # back to UTC for the other tests
    # "filter" beside a field narrows the view to it.
    user = next(dd for dd in by_css(browser, "#detail dd") if dd.text.startswith("ann"))
    user.find_element("css selector", "button.narrow").click()
    wait_for(lambda: url_params(browser).get("attr.user") == ["ann"])


def test_the_status_panel_shows_rings_memory_rejects_and_key_ids(
    server: LogdProcess, browser: Any
) -> None:
    write(server, "t-status", "x")
    server.send_frame(b"\x00" * 40)  # a datagram that is no frame: a reject to count
    wait_for(lambda: server.info()["udp"]["rejected"]["bad_frame"] >= 1)
    stored(server, "t-status", 1)
    open_page(browser, server, "?env=t-status")
    by_css(browser, "#status-toggle")[0].click()
    pane = wait_for(lambda: by_css(browser, "#status:not([hidden]) table"))
    text = by_css(browser, "#status")[0].text
    assert "t-status/api" in text
    assert len(by_css(browser, "#status meter")) >= 2  # ring bytes and memory parts
    info = server.info()
    for key in info["secrets"]["keys"]:
        assert key["key_id"] in text
    assert server.read_secret not in text
    assert server.write_secret not in text
    bad = [tr.text for tr in by_css(browser, "#status tr.bad")]
    assert any(line.startswith("bad_frame") for line in bad)
    assert pane


def test_a_network_drop_resumes_after_the_last_id_with_a_gap_marker(
    tmp_path: Path, browser: Any
) -> None:
    proc = start_logd(tmp_path, "--ring-bytes", "1MiB")
    relay = Relay(("127.0.0.1", int(proc.http_url.rsplit(":", 1)[1])))
    try:
        open_page(browser, proc, "?env=t-drop", base=relay.url)
        wait_for(lambda: by_css(browser, "#conn.on"))
        write(proc, "t-drop", "before the drop")
        wait_for(lambda: row_texts(browser) == ["before the drop"])
        filler = "x" * 900
        with relay.holding():
            wait_for(lambda: by_css(browser, "#conn.off"))
            for i in range(0, 2000, 10):  # ~1.8 MB into a 1 MiB ring: the oldest are evicted
                write(proc, "t-drop", *(f"{j} {filler}" for j in range(i, i + 10)))
                time.sleep(0.002)
            wait_for(lambda: proc.info()["store"]["rings"][0]["evicted"] > 0)
            write(proc, "t-drop", "after the drop")
            wait_for(lambda: proc.query(env="t-drop", limit="1")[0]["txt"] == "after the drop")
        wait_for(lambda: row_texts(browser)[:1] == ["after the drop"], timeout=20)
        assert any("events were lost here" in m for m in markers(browser))
        ids = held_ids(browser)
        assert len(ids) == len(set(ids)), "no event is shown twice"
        assert ids == sorted(ids, key=int, reverse=True), "newest first, in id order"
        assert 500 < len(ids) <= 2000, "the list keeps at most 2,000 events"
        assert len(by_css(browser, "#list .row")) < 40, "and draws only those in view"
    finally:
        relay.close()
        proc.stop()


def test_a_throttled_tail_is_told_and_retried(tmp_path: Path, browser: Any) -> None:
    import http.client

    proc = start_logd(tmp_path, env={"LOGD_MAX_TAILS": "1"})
    host, port = urllib.parse.urlsplit(proc.http_url).netloc.split(":")
    other = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        other.request("GET", "/tail", headers={"Authorization": proc.read_secret})
        assert other.getresponse().status == 200  # the one tail this server allows
        open_page(browser, proc, "?env=t-busy")
        message = lambda: by_css(browser, "#msg")[0].text  # noqa: E731
        wait_for(lambda: "Throttled by the server: too many live tails" in message())
        assert "retry in 5 s" in message()
        other.close()  # the place frees: the page's next try gets it
        wait_for(lambda: by_css(browser, "#conn.on"), timeout=20)
        write(proc, "t-busy", "through at last")
        wait_for(lambda: row_texts(browser) == ["through at last"])
    finally:
        other.close()
        proc.stop()


def test_the_page_is_served_with_its_security_headers(server: LogdProcess) -> None:
    for path, media in (
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/icon.svg", "image/svg+xml"),
    ):
        status, body, headers = server.get(path, secret="")
        assert status == 200
        assert headers["Content-Type"] == f"{media}; charset=utf-8"
        csp = headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert body
    _, html, _ = server.get("/ui/", secret="")
    assert "<script>" not in html
    assert not re.search(r"\s(style|on[a-z]+)=", html)


def test_the_page_never_turns_text_into_html_or_code() -> None:
    """Beside the browser test of hostile text: no API in the page's script that parses a
    string as HTML or runs it, no inline handler or style in its HTML."""
    ui = Path(__file__).resolve().parents[1] / "service" / "logd" / "server" / "ui"
    script = (ui / "app.js").read_text()
    for api in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        'setAttribute("style',
        ".href =",
    ):
        assert api not in script, api
    assert "textContent" in script
    html = (ui / "index.html").read_text()
    assert not re.search(r"<script>|\s(style|on[a-z]+)=", html)


def test_only_a_browser_without_a_secret_is_redirected_from_root(server: LogdProcess) -> None:
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    status, _, headers = _no_redirect(server, "/?svc=api", html)
    assert status == 302
    assert headers["Location"] == "/ui/?svc=api"
    # With a secret, or asking for anything but HTML, `/` is the query as before.
    status, body, _ = server.get("/", headers=html)
    assert status == 200
    assert isinstance(body, list)
    status, body, _ = server.get("/", headers={"Accept": "*/*"}, secret="")
    assert status == 401
    assert "error" in body
    status, body, _ = server.get("/", secret="")
    assert status == 401
    status, body, _ = server.get("/ui/nothing.js", secret="")
    assert status == 404
    assert body == {"error": "not found"}
    status, _, headers = _no_redirect(server, "/ui", {})
    assert status == 302
    assert headers["Location"] == "/ui/"


def _no_redirect(server: LogdProcess, path: str, headers: dict[str, str]) -> Any:
    import http.client

    host, port = urllib.parse.urlsplit(server.http_url).netloc.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(), response.headers
    finally:
        conn.close()


def test_a_screenshot_of_the_page_with_data_is_written(tmp_path: Path) -> None:
    require_browser()
    out = Path(__file__).resolve().parents[1] / "build" / "screenshots" / "ui-test.png"
    screenshot(out)
    head = out.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width == 1400
    assert height > 600
    assert out.stat().st_size > 50_000, "a page with data, not a blank one"
