"""The lab web page in a real browser: headless Debian Chromium driven by selenium.

The app runs with uvicorn in a thread on a free 127.0.0.1 port, on the tiny random counter of
``tests.serve.helpers``. The tests upload synthetic smears (always) and BCCD JPEGs (when the shared
data is there) and check what a person sees against the API and ``structures.differential``: as many
boxes as the API has cells above the slider, the table's numbers, the slider and class switches,
an error message for a non-image, keyboard use, both screen sizes, the pixel size entry (off
without the model's scale, checked before any request, sent as ``microns_per_pixel``), the scale
line and the fields outside the training data. Screenshots go to the test's
folder (``python -m dev.web_screenshot`` makes the README's, with the same
helpers).

Skipped (saying why) when chromium, chromedriver or selenium are missing; ``.ci/run`` installs
them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

import pytest

from bmc_detectron.data.classes import MARROW_ABBRS
from bmc_detectron.structures.differential import Lineage, differential
from dev.web_screenshot import (
    browser_paths,
    chrome,
    hover_a_cell,
    open_page,
    upload,
    wait_for,
)
from tests.serve.helpers import encode, running_server, smear, tiny_counter, visible_cells

httpx = pytest.importorskip("httpx", reason="pip install -e '.[serve]'")
pytest.importorskip("selenium.webdriver", reason="pip install -e '.[serve]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.skipif(
    not all(browser_paths()),
    reason="chromium / chromedriver not installed "
    "(apt-get install -y --no-install-recommends chromium chromium-driver)",
)
START = 0.3  # where the slider starts
SIZES = {"laptop": (1366, 768), "wide": (1920, 1080)}


@pytest.fixture(scope="module")
def server():
    from bmc_detectron.serve import ServeSettings, create_app

    app = create_app(tiny_counter(), settings=ServeSettings(default_threshold=START))
    with running_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    driver = chrome(downloads)
    driver.downloads = downloads
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def smears(tmp_path_factory) -> List[Path]:
    folder = tmp_path_factory.mktemp("smears")
    paths = []
    for i, (h, w) in enumerate([(480, 640), (360, 480)]):
        paths.append(folder / f"smear-{i}.png")
        paths[-1].write_bytes(encode(smear(h, w, seed=20 + i)))
    return paths


@pytest.fixture(scope="module")
def scaled_server(tmp_path_factory):
    """The tiny counter with a training profile of synthetic smears drawn at twice the scale
    of ``smears`` (0.2 µm per pixel): unscaled fields are flagged, at 0.4 µm per pixel not."""
    from bmc_detectron.pipeline.model_scale import ModelScale
    from bmc_detectron.pipeline.scale_plan import ScaleSetup
    from bmc_detectron.serve import ServeSettings, create_app
    from tests.pipeline.helpers import write_profile

    folder = tmp_path_factory.mktemp("profile")
    profile = write_profile(folder, mpp=0.2)
    model = ModelScale.from_profile(profile, str(folder / "training_profile.json"))
    app = create_app(
        tiny_counter(),
        settings=ServeSettings(default_threshold=START),
        scale=ScaleSetup(model=model, profile=profile),
    )
    with running_server(app) as url:
        yield url


def show(driver, url: str, size: str = "laptop") -> None:
    open_page(driver, url, *SIZES[size])


def api_fields(url: str, paths: Sequence[Path], **data: str) -> List[Dict]:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    response = httpx.post(f"{url}/api/v1/analyze", files=files, data=data, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()["fields"]


def requests_made(driver) -> int:
    return driver.execute_script("return performance.getEntriesByType('resource').length")


def shown_boxes(driver) -> int:
    return len(driver.find_elements(By.CSS_SELECTOR, "#boxes rect.cell:not(.is-hidden)"))


def select_field(driver, index: int) -> None:
    driver.find_elements(By.CSS_SELECTOR, ".thumb")[index].click()
    wait_for(
        lambda: (
            driver.find_elements(By.CSS_SELECTOR, ".thumb")[index].get_attribute("aria-pressed")
            == "true"
        ),
        "the field to be selected",
    )


def assert_table_matches(driver, cells: List[Dict], excluded: Sequence[str] = ()) -> dict:
    """The page's table against structures.differential.differential of the same visible cells."""
    want = differential(
        [c["label"] for c in cells], [c["prob"] < 0.5 for c in cells], MARROW_ABBRS, Lineage()
    )
    rows = driver.find_elements(By.CSS_SELECTOR, "#diff-body tr")
    assert [r.get_attribute("data-class") for r in rows] == list(MARROW_ABBRS)
    for row, expected in zip(rows, want["classes"]):
        n, pct, ci = row.find_elements(By.CSS_SELECTOR, "td.num")
        assert int(n.get_attribute("data-value")) == expected["count"]
        if row.get_attribute("data-class") in excluded:
            assert n.text == "off"
            continue
        assert n.text == str(expected["count"])
        if want["counted"]:
            assert float(pct.get_attribute("data-value")) == pytest.approx(expected["percent"])
            assert pct.text == f"{expected['percent']:.1f}"
            lo, hi = expected["ci95_percent"]
            assert float(ci.get_attribute("data-lo")) == pytest.approx(lo, abs=1e-9)
            assert float(ci.get_attribute("data-hi")) == pytest.approx(hi, abs=1e-9)
            assert ci.text == f"{lo:.1f}–{hi:.1f}"
    assert driver.find_element(By.ID, "total-count").text == str(want["counted"])
    assert driver.find_element(By.ID, "uncertain-count").text == str(want["uncertain"]["total"])
    ratio = want["me"]["ratio"]
    shown = driver.find_element(By.ID, "me-ratio").text
    assert shown == ("—" if ratio is None else f"{ratio:.2f} : 1")
    warnings = driver.find_element(By.ID, "warnings").text
    assert want["warnings"][0] in warnings  # fewer than 500 cells here
    return want


def test_boxes_and_table_match_the_api(server, browser, smears, tmp_path):
    show(browser, server)
    upload(browser, smears)
    fields = api_fields(server, smears)
    for index, field in enumerate(fields):
        select_field(browser, index)
        want = len(visible_cells(field, START))
        assert want > 0 and shown_boxes(browser) == want
        assert (
            f"{want} of {len(field['cells'])} cells shown"
            in browser.find_element(By.ID, "field-meta").text
        )
    cells = [c for f in fields for c in visible_cells(f, START)]
    want = assert_table_matches(browser, cells)
    summary = browser.find_element(By.ID, "summary-line").text
    assert summary.startswith(f"{want['counted']} cells counted in 2 fields")
    hover_a_cell(browser)
    tooltip = browser.find_element(By.ID, "tooltip")
    assert tooltip.is_displayed() and "class probability" in tooltip.text
    assert "detection score" in tooltip.text
    browser.save_screenshot(str(tmp_path / "page_laptop.png"))


def test_slider_hides_low_scores_without_a_request(server, browser, smears, tmp_path):
    show(browser, server)
    upload(browser, smears[:1])
    (field,) = api_fields(server, smears[:1])
    scores = sorted(c["det_score"] for c in field["cells"])
    target = math.floor(100 * scores[len(scores) // 2]) / 100  # about half the cells stay
    requests = browser.execute_script("return performance.getEntriesByType('resource').length")
    slider = browser.find_element(By.ID, "threshold")
    slider.send_keys(*[Keys.ARROW_RIGHT] * round(100 * (target - START)))  # the keyboard, too
    assert browser.find_element(By.ID, "threshold-value").text == f"{target:.2f}"
    want = visible_cells(field, target)
    assert 0 < len(want) < len(visible_cells(field, START))
    assert shown_boxes(browser) == len(want)
    for rect in browser.find_elements(By.CSS_SELECTOR, "#boxes rect.cell.is-hidden"):
        assert float(rect.get_attribute("data-score")) < target
    assert_table_matches(browser, want)
    after = browser.execute_script("return performance.getEntriesByType('resource').length")
    assert after == requests, "the slider must not send a request"
    browser.save_screenshot(str(tmp_path / "slider.png"))


def test_class_switch_and_downloads(server, browser, smears, tmp_path):
    show(browser, server)
    browser.find_element(By.ID, "case-name").send_keys("BM 2026/17")
    upload(browser, smears)
    fields = api_fields(server, smears)
    cells = [c for f in fields for c in visible_cells(f, START)]
    top = max(MARROW_ABBRS, key=lambda name: sum(c["label"] == name for c in cells))
    browser.find_element(By.ID, f"toggle-{top}").click()
    select_field(browser, 0)
    assert shown_boxes(browser) == len(visible_cells(fields[0], START, [top]))
    want = assert_table_matches(browser, [c for c in cells if c["label"] != top], [top])
    browser.find_element(By.ID, "download-json").click()
    summary_file = browser.downloads / "BM_2026_17-summary.json"
    wait_for(summary_file.is_file, "the summary download")
    summary = json.loads(summary_file.read_text())
    assert summary["counted"] == want["counted"]
    assert summary["settings"]["view"]["excluded_classes"] == [top]
    browser.find_element(By.ID, "download-csv").click()
    csv_file = browser.downloads / "BM_2026_17-cells.csv"
    wait_for(csv_file.is_file, "the CSV download")
    rows = csv_file.read_text().strip().splitlines()
    assert len(rows) == 1 + want["counted"] + want["uncertain"]["total"]


def test_non_image_shows_an_error(server, browser, smears, tmp_path):
    show(browser, server)
    fake = tmp_path / "report.png"
    fake.write_text("this is a text file with an image's name")
    browser.find_element(By.ID, "file-input").send_keys(str(fake))
    message = wait_for(lambda: browser.find_element(By.ID, "messages").text, "an error message")
    assert "report.png is not an image" in message
    assert browser.find_element(By.ID, "messages").get_attribute("role") == "alert"
    assert not browser.find_elements(By.CSS_SELECTOR, ".thumb")
    upload(browser, smears[:1])  # the page goes on working
    browser.save_screenshot(str(tmp_path / "error.png"))


def test_keyboard_reaches_and_opens_the_drop_zone(server, browser):
    show(browser, server)
    browser.execute_script(
        "document.getElementById('file-input').addEventListener('click', (e) => {"
        " e.preventDefault(); window.chooserOpened = (window.chooserOpened || 0) + 1; });"
    )
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)  # the skip link comes first
    active = browser.switch_to.active_element
    assert active.get_attribute("class") == "skip-link"
    active.send_keys(Keys.ENTER)
    for _ in range(10):
        if browser.switch_to.active_element.get_attribute("id") == "dropzone":
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    zone = browser.switch_to.active_element
    assert zone.get_attribute("id") == "dropzone"
    outline = browser.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none", "a keyboard user must see where the focus is"
    zone.send_keys(Keys.ENTER)
    zone.send_keys(Keys.SPACE)
    assert browser.execute_script("return window.chooserOpened") == 2
    labels = browser.execute_script(
        "return [...document.querySelectorAll('input:not([type=file])')]"
        ".every((i) => i.labels.length > 0 || i.getAttribute('aria-label'))"
    )
    assert labels, "every input has a label"


@pytest.mark.parametrize("size", ["laptop", "wide"])
def test_layout_fits_the_screen(server, browser, smears, size, tmp_path):
    show(browser, server, size)
    upload(browser, smears)
    browser.find_element(By.CSS_SELECTOR, "#model-panel summary").click()
    sizes = browser.execute_script(
        "const d = document.documentElement, p = document.querySelector('.panel');"
        "const s = document.getElementById('stage').getBoundingClientRect();"
        "return [d.scrollWidth, d.clientWidth, p.scrollWidth, p.clientWidth, s.width, s.height,"
        " s.bottom, window.innerHeight, d.scrollHeight];"
    )
    page_w, view_w, panel_w, panel_view_w, stage_w, stage_h, stage_bottom, view_h, page_h = sizes
    assert page_w <= view_w and panel_w <= panel_view_w, "nothing scrolls sideways"
    assert page_h <= view_h, "the page fits the screen (only the side panel scrolls)"
    assert stage_w >= 700 and stage_h >= 300 and stage_bottom <= view_h
    assert "PyTorch" in browser.find_element(By.ID, "model-info").text
    browser.save_screenshot(str(tmp_path / f"page_{size}.png"))


def test_bccd_images(server, browser, shared_root, tmp_path):
    jpegs = sorted((shared_root / "bccd" / "JPEGImages").glob("*.jpg"))[:2]
    show(browser, server, "wide")
    upload(browser, jpegs)
    fields = api_fields(server, jpegs)
    for index, field in enumerate(fields):
        select_field(browser, index)
        assert shown_boxes(browser) == len(visible_cells(field, START))
    assert_table_matches(browser, [c for f in fields for c in visible_cells(f, START)])
    browser.save_screenshot(str(tmp_path / "bccd_wide.png"))


def test_pixel_size_needs_the_models_scale(server, scaled_server, browser):
    show(browser, server)
    entry = browser.find_element(By.ID, "pixel-size")
    assert not entry.is_enabled()
    assert "no recorded scale" in browser.find_element(By.ID, "pixel-size-hint").text
    assert entry.get_attribute("aria-describedby") == "pixel-size-hint"
    browser.find_element(By.CSS_SELECTOR, "#model-panel summary").click()
    assert "Scale\nnot recorded" in browser.find_element(By.ID, "model-info").text
    show(browser, scaled_server)
    entry = browser.find_element(By.ID, "pixel-size")
    assert entry.is_enabled()
    assert entry.accessible_name == "Pixel size (µm per pixel)"
    assert "0.2 µm per pixel" in browser.find_element(By.ID, "pixel-size-hint").text
    browser.find_element(By.CSS_SELECTOR, "#model-panel summary").click()
    info = browser.find_element(By.ID, "model-info").text
    assert "Pixel size\n0.2 µm per pixel" in info and "Red-cell diameter\n33" in info
    # the keyboard reaches it right after the drop zone
    browser.find_element(By.ID, "dropzone").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "pixel-size"


@pytest.mark.parametrize("typed", ["-0.4", "abc"])
def test_bad_pixel_size_is_refused_without_a_request(scaled_server, browser, smears, typed):
    show(browser, scaled_server)
    entry = browser.find_element(By.ID, "pixel-size")
    entry.send_keys(typed)
    before = requests_made(browser)
    browser.find_element(By.ID, "file-input").send_keys(str(smears[0]))
    message = wait_for(lambda: browser.find_element(By.ID, "messages").text, "an error message")
    assert f'pixel size "{typed}" is not a positive number' in message
    assert entry.get_attribute("aria-invalid") == "true"
    assert "positive number" in browser.find_element(By.ID, "pixel-size-hint").text
    assert browser.switch_to.active_element.get_attribute("id") == "pixel-size"
    assert not browser.find_elements(By.CSS_SELECTOR, ".thumb")
    assert requests_made(browser) == before, "no request with a bad pixel size"
    entry.clear()
    entry.send_keys("0.4")
    assert entry.get_attribute("aria-invalid") is None  # typing clears the mark


def test_pixel_size_is_sent_and_the_scale_shown(scaled_server, browser, smears, tmp_path):
    show(browser, scaled_server)
    browser.find_element(By.ID, "pixel-size").send_keys("0.4")
    upload(browser, smears[:1])
    (field,) = api_fields(scaled_server, smears[:1], microns_per_pixel="0.4")
    (plain,) = api_fields(scaled_server, smears[:1])
    assert len(field["cells"]) != len(plain["cells"]), "the rescale changes what is found"
    assert shown_boxes(browser) == len(visible_cells(field, START))
    line = browser.find_element(By.ID, "scale-line").text
    assert line == "Scale: 0.4 µm/px given; fields resized ×2.00 to the model's 0.2 µm/px"
    assert "0.4 µm/px, resized ×2.00" in browser.find_element(By.ID, "field-meta").text
    assert field["flags"] == [] and not browser.find_elements(By.CSS_SELECTOR, ".thumb-flag")
    assert not browser.find_element(By.ID, "ood-card").is_displayed()
    assert_table_matches(browser, visible_cells(field, START))
    browser.save_screenshot(str(tmp_path / "scaled.png"))


def test_flagged_field_shows_its_warning(scaled_server, browser, smears, tmp_path):
    show(browser, scaled_server)
    upload(browser, smears[:1])
    (field,) = api_fields(scaled_server, smears[:1])
    assert field["flags"] and "red-cell diameter" in field["flags"][0]
    assert browser.find_element(By.ID, "scale-line").text == (
        "Scale: images analysed at their own size"
    )
    mark = browser.find_element(By.CSS_SELECTOR, ".thumb.flagged .thumb-flag")
    assert mark.text.startswith("⚠ atypical field")
    spoken = mark.get_attribute("textContent")  # the reasons, for a screen reader too
    assert f"outside the training data ({field['flags'][0]}" in spoken
    assert mark.get_attribute("title") == "\n".join(field["flags"])
    flags_line = browser.find_element(By.ID, "field-flags")
    assert flags_line.is_displayed() and field["flags"][0] in flags_line.text
    card = browser.find_element(By.ID, "ood-card")
    assert card.is_displayed() and "Fields outside the training data" in card.text
    (item,) = browser.find_elements(By.CSS_SELECTOR, "#ood-list > li")
    assert item.get_attribute("data-field") == field["name"]
    assert [r.text for r in item.find_elements(By.CSS_SELECTOR, "li")] == field["flags"]
    warnings = browser.find_element(By.ID, "warnings").text
    assert "1 of 1 field outside the training data" in warnings
    assert_table_matches(browser, visible_cells(field, START))  # still counted
    # a second field at 0.4 µm per pixel: not flagged, and the case's scale differs
    browser.find_element(By.ID, "pixel-size").send_keys("0.4")
    upload(browser, smears[1:])
    assert len(browser.find_elements(By.CSS_SELECTOR, ".thumb.flagged")) == 1
    assert browser.find_element(By.ID, "scale-line").text.startswith(
        "Scale differs between fields: 1 field at its own size · 1 field at 0.4 µm/px, resized "
        "×2.00"
    )
    browser.find_element(By.CSS_SELECTOR, "#ood-list button.field-link").click()
    assert browser.find_element(By.ID, "field-title").text == smears[0].name
    browser.save_screenshot(str(tmp_path / "flagged.png"))


def test_scale_warnings_are_shown(browser, smears):
    """A scale from the config only (no training profile): the API warns, the page shows it."""
    from bmc_detectron.pipeline.model_scale import ModelScale
    from bmc_detectron.pipeline.scale_plan import ScaleSetup
    from bmc_detectron.serve import ServeSettings, create_app

    setup = ScaleSetup(model=ModelScale(microns_per_pixel=0.2, source="config"))
    app = create_app(tiny_counter(), settings=ServeSettings(default_threshold=START), scale=setup)
    with running_server(app) as url:
        show(browser, url)
        browser.find_element(By.ID, "pixel-size").send_keys("0,4")  # a decimal comma
        upload(browser, smears[:1])
        response = httpx.post(
            f"{url}/api/v1/analyze",
            files=[("files", (smears[0].name, smears[0].read_bytes()))],
            data={"microns_per_pixel": "0.4"},
            timeout=120,
        ).json()
        (warning,) = response["scale"]["warnings"]
        assert warning in browser.find_element(By.ID, "warnings").text
        assert "0.4 µm/px given" in browser.find_element(By.ID, "scale-line").text
        assert not browser.find_elements(By.CSS_SELECTOR, ".thumb-flag")
