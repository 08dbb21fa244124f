"""The web page of ``reelrec serve`` (``GET /``) and the endpoints it reads: the JSON endpoints
through FastAPI's test client on the real KuaiRand serving run of conftest.py (faiss path),
then the page itself on the generative path (OneRec-V2 over the tiny real MicroLens chain of
tests/conftest.py, titles on the cards) in a real headless browser (Debian's ``chromium`` and ``chromedriver``; ``.ci/run``
installs them when missing) against a real uvicorn on loopback, which writes a screenshot.

No assertion depends on time: the browser steps wait for what the page shows, not for a
deadline (each wait is bounded only so that a broken page fails instead of hanging)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

#: bound of each browser wait: a broken page fails after it, a working one never reaches it
WAIT_S = int(os.environ.get("REELREC_BROWSER_WAIT_S", "600"))


def test_page_and_its_endpoints(client, rec):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'id="feed"' in html and "/recommend" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched from elsewhere
    users = client.get("/users?n=5").json()["users"]
    assert len(users) == 5
    assert [u["history"] for u in users] == sorted((u["history"] for u in users), reverse=True)
    u = users[0]["user_id"]
    hist = client.get(f"/history/{u}?limit=3").json()
    assert len(hist["items"]) == 3 and hist["store_ok"]
    assert hist["items"][0]["video_id"] == int(rec.logged[u][-1])  # most recent first
    v = int(rec.popular[0])
    item = client.get(f"/items?ids={v},999999999").json()["items"]
    assert item[0]["video_id"] == v and item[0]["known"] and not item[1]["known"]
    assert item[1]["title"] is None and item[1]["tags"] == []
    assert client.get("/items?ids=1,x").status_code == 422
    assert client.get("/users?n=0").status_code == 422
    status = client.get("/status").json()
    assert {"load_ms_per_s", "capacity_ms_per_s", "lambda", "actions"} <= set(status)


def test_item_metadata_reads_titles_tags_and_durations():
    import numpy as np
    import pandas as pd

    from reelrec.serving.service import item_metadata

    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["A dance", None, "  "],
            "tags": [[4, 5], None, []],
            "duration_ms": [12_345.0, np.nan, 0.0],
        }
    )
    meta = item_metadata(items)
    assert meta[1] == {"title": "A dance", "tags": [4, 5], "duration_s": 12.3}
    assert 2 not in meta and meta[3] == {"tags": []}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def browser():
    """A headless Chromium driven by Selenium, or a skip saying what is missing."""
    pytest.importorskip("selenium")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("no chromium / chromedriver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(arg)
    opts.add_argument("--window-size=1400,1000")
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_the_page_in_a_real_browser(make_gen_rec, tmp_path):
    """On the generative path (OneRec-V2 candidates over the tiny real MicroLens chain, at the
    fixed default action: beam 40, 40 ranked): load the page, pick a user, see 10 titled
    videos, like one, see the feed change; save a PNG."""
    import uvicorn
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from reelrec.serving.service import create_app

    gen_rec = make_gen_rec(dcaf=False, calibration_requests=10)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(gen_rec), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    driver = browser()
    try:
        from selenium.common.exceptions import TimeoutException

        class Wait:
            """WebDriverWait that, on a timeout, says what the page showed."""

            def until(self, cond):
                try:
                    return WebDriverWait(driver, WAIT_S).until(cond)
                except TimeoutException:
                    body = driver.find_element(By.TAG_NAME, "main").text
                    logs = driver.get_log("browser")
                    raise AssertionError(f"page shows:\n{body[:3000]}\nconsole: {logs}") from None

        wait = Wait()
        wait.until(lambda _: server.started)
        driver.get(f"http://127.0.0.1:{port}/")

        def cards():
            return driver.find_elements(By.CSS_SELECTOR, "#feed li.card")

        wait.until(lambda _: len(cards()) == 10)  # the first user's feed
        users = Select(driver.find_element(By.ID, "user-select"))
        assert len(users.options) == 50
        users.select_by_index(1)  # pick another user
        second = int(users.options[1].get_attribute("value"))
        note = driver.find_element(By.ID, "feed-note")
        wait.until(lambda _: f"for user {second}" in note.get_attribute("textContent"))
        wait.until(lambda _: len(cards()) == 10)
        before = [c.get_attribute("data-video-id") for c in cards()]
        assert all(c.find_element(By.CSS_SELECTOR, ".title").text for c in cards())
        history = driver.find_elements(By.CSS_SELECTOR, "#history li")
        assert len(history) == min(20, len(gen_rec.logged[second]))
        trace = driver.find_element(By.ID, "trace").text
        assert "action (candidates ranked)" in trace and "Lagrange multiplier" in trace
        assert "candidate source onerec-v2" in trace and "beam width 40" in trace
        liked = before[0]
        cards()[0].find_element(By.CSS_SELECTOR, "button.like").click()
        wait.until(lambda _: "event stored" in driver.find_element(By.ID, "message").text)
        wait.until(lambda _: [c.get_attribute("data-video-id") for c in cards()] != before)
        after = [c.get_attribute("data-video-id") for c in cards()]
        assert liked not in after  # a liked video is history now, never recommended again
        newest = driver.find_element(By.CSS_SELECTOR, "#history li")
        assert newest.get_attribute("data-video-id") == liked  # most recent first
        assert gen_rec.history(second)[0][-1] == int(liked)  # stored by the service
        wait.until(lambda _: "requests / events" in driver.find_element(By.ID, "status").text)
        png = tmp_path / "page.png"
        assert driver.save_screenshot(str(png))
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
        out = os.environ.get("REELREC_SCREENSHOT_DIR")  # to refresh docs/img/serve-page.png
        if out:
            shutil.copy(png, Path(out) / "serve-page.png")
    finally:
        driver.quit()
        server.should_exit = True
        thread.join()
