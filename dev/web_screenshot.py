"""Screenshot the lab web page with images of a case, in headless Chromium (selenium).

    make serve &                                   # or any running app
    python -m dev.web_screenshot --url http://127.0.0.1:8000 \\
        --images case01/*.png --out docs/images/web_page.png [--size 1366x768] [--hover]
    python -m dev.web_screenshot --url http://127.0.0.1:8000 --review CASE \\
        --out docs/images/review.png              # a case's review screen (--no-auth app)

Needs ``chromium`` and ``chromedriver`` (Debian: ``apt-get install chromium chromium-driver``)
and selenium (``pip install -e .[serve]``). The browser tests drive the page with the same
helpers (:func:`chrome`, :func:`open_page`, :func:`upload`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple

from bmc_detectron.utils.io import expand_inputs


def browser_paths() -> Tuple[Optional[str], Optional[str]]:
    """The chromium and chromedriver executables on PATH (None where missing)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    return browser, shutil.which("chromedriver")


def chrome(downloads: Optional[Path] = None) -> Any:
    """A headless Chromium driven by selenium; downloads (if given) go to that folder."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = browser_paths()
    if not (browser and driver):
        raise RuntimeError("chromium and chromedriver are needed (apt-get install chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1920,1080")
    session = webdriver.Chrome(service=Service(driver), options=options)
    if downloads is not None:
        behaviour = {"behavior": "allow", "downloadPath": str(downloads)}
        session.execute_cdp_cmd("Browser.setDownloadBehavior", behaviour)
    return session


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it is truthy; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def viewport(driver: Any, width: int, height: int) -> None:
    """A ``width`` x ``height`` viewport at scale 1."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def open_page(driver: Any, url: str, width: int, height: int) -> None:
    """Load the page in a ``width`` x ``height`` viewport; wait for the model description."""
    from selenium.webdriver.common.by import By

    viewport(driver, width, height)
    driver.get(url)

    def badge_text() -> str:  # the element may not be there yet on a loaded machine
        badges = driver.find_elements(By.ID, "model-badge")
        return badges[0].text if badges else ""

    wait_for(badge_text, "the model description")


def upload(driver: Any, paths: Sequence[Path], timeout: float = 120.0) -> None:
    """Give the page ``paths`` through its file input; wait until every field is analysed."""
    from selenium.webdriver.common.by import By

    def done() -> int:
        return len(driver.find_elements(By.CSS_SELECTOR, ".thumb.done"))

    before = done()
    driver.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in paths))
    wait_for(
        lambda: (
            done() == before + len(paths)
            and not driver.find_elements(By.CSS_SELECTOR, ".thumb.queued, .thumb.analysing")
        ),
        "the fields to be analysed",
        timeout,
    )


def hover_a_cell(driver: Any) -> None:
    """Move the mouse over the largest shown cell, so its tooltip shows."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    rects = driver.find_elements(By.CSS_SELECTOR, "#boxes rect.cell:not(.is-hidden)")
    if rects:
        target = max(rects, key=lambda r: r.size["width"] * r.size["height"])
        ActionChains(driver).move_to_element(target).perform()
        time.sleep(0.3)


def review_screen(driver: Any, url: str, case: str, width: int, height: int) -> None:
    """Open ``case``'s review screen, step to the third cell and confirm its class by key, as
    a reviewer does (the cell is then drawn reviewed)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    viewport(driver, width, height)
    driver.get(f"{url.rstrip('/')}/review/{case}")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#review-boxes rect.rcell"), "cells")
    body = driver.find_element(By.TAG_NAME, "body")
    for key in (Keys.ARROW_RIGHT, Keys.ARROW_RIGHT):
        body.send_keys(key)
    label = driver.find_element(By.ID, "cell-info").text
    for i, name in enumerate(("Prim", "Lym", "Mono", "Plas", "Red", "Promy", "Myelo", "Late")):
        if f"now {name}" in label:
            body.send_keys(str(i + 1))
            break
    body.send_keys(Keys.ARROW_RIGHT)
    time.sleep(0.5)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command; returns the exit status."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running app's base URL")
    p.add_argument("--images", nargs="+", help="images, folders or patterns (the count page)")
    p.add_argument("--review", metavar="CASE", help="screenshot this case's review screen")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--size", default="1366x768", help="viewport WIDTHxHEIGHT")
    p.add_argument("--case", default="", help="case name typed into the page")
    p.add_argument("--hover", action="store_true", help="show a cell's tooltip")
    p.add_argument("--model-panel", action="store_true", help="open the model panel")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    if not (args.images or args.review):
        p.error("give --images (the count page) or --review CASE")
    try:
        images = expand_inputs(args.images) if args.images else []
        driver = chrome()
    except (FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from selenium.webdriver.common.by import By

        if args.review:
            review_screen(driver, args.url, args.review, width, height)
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(args.out))
            print(f"wrote {args.out}")
            return 0
        open_page(driver, f"{args.url.rstrip('/')}/count", width, height)
        driver.find_element(By.ID, "case-name").send_keys(args.case)
        upload(driver, [Path(i).resolve() for i in images])
        if args.model_panel:
            driver.find_element(By.CSS_SELECTOR, "#model-panel summary").click()
        driver.execute_script("document.activeElement.blur()")
        if args.hover:
            hover_a_cell(driver)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(args.out))
    finally:
        driver.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
