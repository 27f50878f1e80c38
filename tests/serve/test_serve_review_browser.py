"""The review screen in headless Chromium (selenium), as ``test_serve_browser`` drives the count
page: log in, open a case from the list, reclassify by mouse and by keyboard, delete, draw a box,
undo, sign, reload and see it kept; the signed case refuses edits; the exported COCO equals the
reviewed cells. The README's screenshot of the review screen is made with trained models by
``python -m dev.web_screenshot --review`` (docs/guides/cases.md), not by these tests.
"""

from __future__ import annotations

import pytest

from dev.web_screenshot import browser_paths, chrome, wait_for
from tests.serve.case_helpers import PASSWORD, case_app, case_db
from tests.serve.helpers import encode, running_server, smear, tiny_counter

pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
pytest.importorskip("selenium.webdriver", reason="pip install -e '.[serve]'")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

pytestmark = pytest.mark.skipif(
    not all(browser_paths()), reason="chromium / chromedriver not installed"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    db = case_db(tmp_path_factory.mktemp("cases"))
    app = case_app(tiny_counter(), db, hosts=("127.0.0.1",))
    with running_server(app) as url:
        yield url, db
    db.close()


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    metrics = {"width": 1366, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    yield d
    d.quit()


def stored(db):
    from bmc_detectron.cases.queries import get_case

    with db.session() as s:
        case = get_case(s, "case42")
        return case.status, {
            c.id: (c.reviewed_class, c.deleted, c.added) for f in case.fields for c in f.cells
        }


def cell_rects(d):
    return d.find_elements(By.CSS_SELECTOR, "#review-boxes rect.rcell")


def selected_info(d) -> str:
    return d.find_element(By.ID, "cell-info").text


def reviewer_count(d, name: str) -> str:
    return d.find_element(
        By.CSS_SELECTOR, f"#diff-rows tr[data-class='{name}'] .reviewed-count"
    ).text


def test_the_whole_review(served, driver, tmp_path):
    url, db = served
    d = driver
    d.get(url + "/")
    wait_for(lambda: "/login" in d.current_url, "the login page")
    d.find_element(By.ID, "login-name").send_keys("rex")
    d.find_element(By.ID, "login-password").send_keys(PASSWORD + Keys.ENTER)
    wait_for(
        lambda: d.find_elements(By.CSS_SELECTOR, "#case-rows tr[data-case='case42'] a"),
        "the case list",
    )
    d.find_element(By.CSS_SELECTOR, "#case-rows tr[data-case='case42'] a").click()
    wait_for(lambda: len(cell_rects(d)) == 3, "the cells of field f1")

    # by mouse: pick cell 1, give it Myelo from the palette
    ActionChains(d).move_to_element(
        d.find_element(By.CSS_SELECTOR, "rect[data-id='1']")
    ).click_and_hold().release().perform()
    wait_for(lambda: selected_info(d).startswith("#1 "), "cell 1 selected")
    d.find_element(By.CSS_SELECTOR, "#palette button[data-class='Myelo']").click()
    wait_for(lambda: stored(db)[1][1][0] == "Myelo", "Myelo stored")
    assert reviewer_count(d, "Myelo") == "2"
    # by keyboard: next cell, key 1 (Lym), then typed letters R-e (Red) on the next
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: selected_info(d).startswith("#2 "), "cell 2 selected")
    body.send_keys("1")
    wait_for(lambda: stored(db)[1][2][0] == "Lym", "Lym stored by key 1")
    body.send_keys(Keys.ARROW_RIGHT)
    wait_for(lambda: selected_info(d).startswith("#3 "), "cell 3 selected")
    body.send_keys("r")
    wait_for(lambda: stored(db)[1][3][0] == "Red", "Red stored by typing r")
    # delete it, then undo the delete
    body.send_keys(Keys.DELETE)
    wait_for(lambda: stored(db)[1][3][1] is True, "cell 3 deleted")
    wait_for(lambda: len(cell_rects(d)) == 2, "two boxes left")
    body.send_keys("z")
    wait_for(lambda: stored(db)[1][3][1] is False, "cell 3 back")
    wait_for(lambda: len(cell_rects(d)) == 3, "three boxes again")
    # draw a box for a missed cell: the model classifies, the person keys Myelo
    d.find_element(By.ID, "add-mode").click()
    svg = d.find_element(By.ID, "review-boxes")
    w, h = svg.size["width"], svg.size["height"]
    ActionChains(d).move_to_element_with_offset(
        svg, int(w * 0.3), int(h * 0.3)
    ).click_and_hold().move_by_offset(int(w * 0.15), int(h * 0.2)).release().perform()
    wait_for(lambda: len(stored(db)[1]) == 5, "the added cell stored")
    new_id = max(stored(db)[1])
    wait_for(lambda: selected_info(d).startswith(f"#{new_id} "), "the added cell selected")
    body.send_keys("3")
    wait_for(lambda: stored(db)[1][new_id][0] == "Myelo", "the added cell keyed Myelo")
    assert len(d.find_elements(By.CSS_SELECTOR, "#gallery .group[data-class='Myelo'] .tile")) == 3

    # reload: everything kept
    d.refresh()
    wait_for(lambda: len(cell_rects(d)) == 4, "the boxes after a reload")
    assert reviewer_count(d, "Myelo") == "3" and reviewer_count(d, "Red") == "1"
    # sign; the page and the API refuse edits
    d.find_element(By.ID, "sign").click()
    d.switch_to.alert.accept()
    wait_for(lambda: stored(db)[0] == "signed", "the case signed")
    wait_for(lambda: "signed by rex" in d.find_element(By.ID, "signed-by").text, "who signed")
    d.refresh()
    wait_for(lambda: d.find_element(By.ID, "case-status").text == "signed", "signed after reload")
    before = stored(db)[1]
    ActionChains(d).move_to_element(
        d.find_element(By.CSS_SELECTOR, "rect[data-id='1']")
    ).click_and_hold().release().perform()
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys("2")
    body.send_keys(Keys.DELETE)
    wait_for(lambda: "read-only" in d.find_element(By.ID, "message").text, "the read-only message")
    assert stored(db)[1] == before

    # the exported COCO is the reviewed cells
    from bmc_detectron.cases.export import export_coco

    with db.session() as s:
        coco = export_coco(s, db.store, ["case42"])
    names = {c["id"]: c["name"] for c in coco["categories"]}
    exported = sorted((tuple(a["bbox"]), names[a["category_id"]]) for a in coco["annotations"])
    kept = []
    from bmc_detectron.cases.queries import get_case

    with db.session() as s:
        for f in get_case(s, "case42").fields:
            for c in f.cells:
                if not c.deleted and c.final_class != "Other":
                    kept.append(((c.x0, c.y0, c.x1 - c.x0, c.y1 - c.y0), c.final_class))
    assert exported == sorted(kept) and len(kept) == 5


def test_count_in_the_page_keeps_a_case_and_screenshot(served, driver, tmp_path):
    """The case list's form counts images and keeps them as a case, opened for review; the
    screenshot tool's review mode takes its picture."""
    url, db = served
    d = driver
    images = []
    for i, (h, w) in enumerate([(480, 640), (360, 480)]):
        images.append(tmp_path / f"smear-{i}.png")
        images[-1].write_bytes(encode(smear(h, w, seed=20 + i)))
    d.get(url + "/")
    wait_for(lambda: d.find_elements(By.ID, "new-case-id"), "the case list")
    if "/login" in d.current_url:  # another test's session may be gone
        d.find_element(By.ID, "login-name").send_keys("rex")
        d.find_element(By.ID, "login-password").send_keys(PASSWORD + Keys.ENTER)
    d.find_element(By.ID, "new-case-id").send_keys("BM-2025-017")
    d.find_element(By.ID, "new-case-files").send_keys("\n".join(str(p) for p in images))
    d.find_element(By.ID, "new-case-count").click()
    wait_for(lambda: "/review/BM-2025-017" in d.current_url, "the new case's review", 120)
    wait_for(lambda: len(cell_rects(d)) > 3, "the counted cells")
    from bmc_detectron.cases.queries import get_case

    with db.session() as s:
        case = get_case(s, "BM-2025-017")
        assert [f.width for f in case.fields] == [640, 480]
        assert len(cell_rects(d)) == len(case.fields[0].cells)
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.ARROW_RIGHT)
    body.send_keys("2")
    body.send_keys(Keys.ARROW_RIGHT)
    wait_for(
        lambda: d.find_elements(By.CSS_SELECTOR, "#review-boxes rect.reviewed"), "a reviewed cell"
    )
    from dev.web_screenshot import review_screen

    review_screen(d, url, "BM-2025-017", 1366, 900)
    shot = tmp_path / "review.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
