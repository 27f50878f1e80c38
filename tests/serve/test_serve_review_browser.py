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


def add_big_case(db, name: str = "big20", fields: int = 20) -> None:
    """A case of ``fields`` small fields g01, g02, ... (1 to 3 cells each); every cell of g02
    reviewed by rex, so that g02 alone has nothing left to review."""
    import io

    from PIL import Image

    from bmc_detectron.cases.importer import add_case
    from bmc_detectron.cases.review import reclassify
    from bmc_detectron.pipeline.counter import Cell
    from bmc_detectron.pipeline.report import FieldRecord

    classes = ["Lym", "Red", "Myelo"]
    records, images = [], []
    for i in range(fields):
        cells = [
            Cell((4.0 + 18 * k, 6.0, 18.0 + 18 * k, 22.0), 0.9, "cell", classes[k], 0.8, None)
            for k in range(1 + i % 3)
        ]
        records.append(FieldRecord(f"g{i + 1:02d}", "g.png", "", "fp", 48, 64, 1, 0.1, 0.1, cells))
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (120 + 4 * i, 90, 140)).save(buf, format="PNG")
        images.append(buf.getvalue())
    summary = {"class_names": classes, "uncertain_below": 0.5, "settings": {}}
    with db.session() as s:
        case = add_case(s, db.store, name, records, images, summary, "test", "test")
        for c in case.fields[1].cells:
            reclassify(s, case, c.id, c.model_class, c.version, "rex")


def open_review(d, url: str, case: str) -> None:
    """The review screen of ``case``, logging rex in when the session is gone."""
    d.get(f"{url}/review/{case}")
    wait_for(lambda: "/login" in d.current_url or cell_rects(d), "the review or the login page")
    if "/login" in d.current_url:
        d.find_element(By.ID, "login-name").send_keys("rex")
        d.find_element(By.ID, "login-password").send_keys(PASSWORD + Keys.ENTER)
    wait_for(lambda: cell_rects(d), "the review screen")


def shown_field(d) -> str:
    src = d.find_element(By.ID, "field-image").get_attribute("src")
    return src.rsplit("/fields/", 1)[1].split("/")[0]


def test_many_fields_get_a_pager_and_keys_move_the_field(served, driver, tmp_path):
    from selenium.webdriver.support.select import Select

    url, db = served
    d = driver
    add_big_case(db)
    open_review(d, url, "case42")  # a small case keeps its buttons; ] moves to the next field
    assert [b.text for b in d.find_elements(By.CSS_SELECTOR, "#field-tabs .tab")] == ["f1", "f2"]
    assert not d.find_elements(By.ID, "field-select")
    d.find_element(By.TAG_NAME, "body").send_keys("]")
    wait_for(lambda: shown_field(d) == "f2", "f2 by ]")
    assert d.find_element(By.CSS_SELECTOR, "#field-tabs .tab.current").text == "f2"

    open_review(d, url, "big20")
    wait_for(lambda: d.find_elements(By.ID, "field-select"), "the pager")
    assert not d.find_elements(By.CSS_SELECTOR, "#field-tabs .tab")
    select = Select(d.find_element(By.ID, "field-select"))
    texts = [o.text for o in select.options]
    assert len(texts) == 20
    assert texts[0] == "field 1 of 20: g01 · 1 cells · 1 to review ●"
    assert texts[1] == "field 2 of 20: g02 · 2 cells"  # all reviewed: no mark
    assert texts[19] == "field 20 of 20: g20 · 2 cells · 2 to review ●"
    assert d.find_element(By.ID, "field-prev").get_attribute("disabled")
    d.find_element(By.ID, "field-next").click()
    wait_for(lambda: shown_field(d) == "g02", "g02 by Next")
    assert select.first_selected_option.text.startswith("field 2 of 20: g02")
    assert len(cell_rects(d)) == 2
    select.select_by_index(14)
    wait_for(lambda: shown_field(d) == "g15", "g15 from the drop-down")
    assert len(cell_rects(d)) == 3
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys("]")
    wait_for(lambda: shown_field(d) == "g16", "g16 by ]")
    body.send_keys("[", "[")
    wait_for(lambda: shown_field(d) == "g14", "g14 by [ [")
    body.send_keys(Keys.PAGE_DOWN)
    wait_for(lambda: shown_field(d) == "g15", "g15 by PageDown")
    body.send_keys(Keys.PAGE_UP)
    wait_for(lambda: shown_field(d) == "g14", "g14 by PageUp")
    assert select.first_selected_option.text.startswith("field 14 of 20: g14")
    d.find_element(By.ID, "field-prev").click()
    wait_for(lambda: shown_field(d) == "g13", "g13 by Previous")
    select.select_by_index(19)
    wait_for(lambda: shown_field(d) == "g20", "the last field")
    assert d.find_element(By.ID, "field-next").get_attribute("disabled")
    body.send_keys("]")  # past the last field: stays
    # reviewing the last cell of g20 by key drops its mark
    body.send_keys(Keys.ARROW_RIGHT, "1", Keys.ARROW_RIGHT, "2")
    wait_for(lambda: select.first_selected_option.text.endswith("· 2 cells"), "g20's mark gone")
    assert shown_field(d) == "g20"
    select.select_by_index(4)
    wait_for(lambda: shown_field(d) == "g05", "g05 for the screenshot")
    shot = tmp_path / "review-pager.png"
    d.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_gallery_drag_to_another_class_is_saved_and_audited(served, driver):
    from sqlalchemy import select

    from bmc_detectron.cases.models import AuditEntry
    from bmc_detectron.cases.queries import get_case

    url, db = served
    d = driver
    add_big_case(db, "drag3", fields=3)
    with db.session() as s:
        cell_id = get_case(s, "drag3").fields[0].cells[0].id  # Lym, not reviewed
    open_review(d, url, "drag3")
    tile = f"#gallery .group[data-class='Lym'] .tile[data-id='{cell_id}']"
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, tile), "the cell's tile under Lym")
    # HTML5 drag and drop: Chromium's native drag is not driven by WebDriver, so the page gets
    # the events a drag fires (dragstart on the tile, dragover and drop on the group) with one
    # DataTransfer, as the browser would hand them
    d.execute_script(
        """const [tile, group] = arguments, data = new DataTransfer();
        const fire = (el, type) => el.dispatchEvent(new DragEvent(type,
          {bubbles: true, cancelable: true, dataTransfer: data}));
        fire(tile, "dragstart"); fire(group, "dragenter"); fire(group, "dragover");
        fire(group, "drop"); fire(tile, "dragend");""",
        d.find_element(By.CSS_SELECTOR, tile),
        d.find_element(By.CSS_SELECTOR, "#gallery .group[data-class='Red']"),
    )
    moved = f"#gallery .group[data-class='Red'] .tile[data-id='{cell_id}']"
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, moved), "the tile under Red")
    api = d.execute_async_script(
        "const done = arguments[0];"
        "BMC.call('GET', '/cases/drag3').then(done, (e) => done(String(e)));"
    )
    cells = {c["id"]: c for f in api["fields"] for c in f["cells"]}
    assert cells[cell_id]["reviewed_class"] == "Red" and cells[cell_id]["reviewed_by"] == "rex"
    with db.session() as s:
        entries = s.scalars(
            select(AuditEntry).where(AuditEntry.entity == "cell", AuditEntry.entity_id == cell_id)
        ).all()
        trail = [
            (e.user_name, e.action, e.old["reviewed_class"], e.new["reviewed_class"])
            for e in entries
        ]
    assert trail == [("rex", "reclassify", None, "Red")]
