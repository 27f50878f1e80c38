"""The case list in headless Chromium: each case's lab in its own column; an admin filters the
list to one lab, a reviewer (one lab) has no lab filter. A screenshot of the filtered list is
written to the test's temporary folder (``case_list_lab.png``)."""

from __future__ import annotations

import pytest

from dev.web_screenshot import browser_paths, chrome, wait_for
from tests.serve.helpers import running_server, tiny_counter

pytest.importorskip("sqlalchemy", reason="pip install -e '.[cases]'")
pytest.importorskip("selenium.webdriver", reason="pip install -e '.[serve]'")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402

from bmc_detectron.cases.importer import import_report  # noqa: E402
from bmc_detectron.cases.users import add_user  # noqa: E402
from tests.cases.helpers import make_report, new_db  # noqa: E402
from tests.serve.case_helpers import PASSWORD, case_app  # noqa: E402

pytestmark = pytest.mark.skipif(
    not all(browser_paths()), reason="chromium / chromedriver not installed"
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """caseA, caseC in lab-a, caseB in lab-b; ada is an admin, amy reviews lab-a."""
    tmp = tmp_path_factory.mktemp("cases")
    db = new_db(tmp)
    cases = (("caseA", "lab-a", 0), ("caseB", "lab-b", 3), ("caseC", "lab-a", 6))
    with db.session() as s:
        for name, lab, offset in cases:
            import_report(s, db.store, make_report(tmp / "reports", name, offset), "t", lab=lab)
        add_user(s, "ada", PASSWORD, "admin", "test")
        add_user(s, "amy", PASSWORD, "reviewer", "test", "lab-a")
    with running_server(case_app(tiny_counter(), db, hosts=("127.0.0.1",))) as url:
        yield url
    db.close()


@pytest.fixture(scope="module")
def driver():
    d = chrome()
    metrics = {"width": 1100, "height": 700, "deviceScaleFactor": 1, "mobile": False}
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    yield d
    d.quit()


ROWS_JS = (
    "return [...document.querySelectorAll('#case-rows tr')]"
    ".map((r) => [r.dataset.case, r.querySelector('td.lab').textContent]);"
)


def rows(d) -> list:
    """(case, lab shown in the Lab column) of every row of the list, sorted (read at once: the
    list may be re-drawn meanwhile)."""
    return sorted(tuple(r) for r in d.execute_script(ROWS_JS))


def log_in(d, url: str, name: str) -> None:
    d.delete_all_cookies()
    d.get(url + "/login")
    wait_for(lambda: d.find_elements(By.ID, "login-name"), "the login page")
    d.find_element(By.ID, "login-name").send_keys(name)
    d.find_element(By.ID, "login-password").send_keys(PASSWORD + Keys.ENTER)
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#case-rows tr"), "the case list")


def test_the_list_shows_each_cases_lab_and_an_admin_filters_by_lab(served, driver, tmp_path):
    d = driver
    log_in(d, served, "ada")
    every = [("caseA", "lab-a"), ("caseB", "lab-b"), ("caseC", "lab-a")]
    wait_for(lambda: rows(d) == every, "three cases of two labs")
    headers = [th.text for th in d.find_elements(By.CSS_SELECTOR, ".case-table thead th")]
    assert headers == ["Case", "Version", "Lab", "Status", "Created (UTC)"]
    lab_box = d.find_element(By.ID, "search-lab")
    assert lab_box.is_displayed()
    choices = d.find_elements(By.CSS_SELECTOR, "#lab-names option")
    assert sorted(o.get_attribute("value") for o in choices) == ["lab-a", "lab-b"]
    lab_box.send_keys("lab-b" + Keys.ENTER)
    wait_for(lambda: rows(d) == [("caseB", "lab-b")], "only lab-b's case")
    assert d.find_element(By.ID, "case-count").text == "1 case(s)"
    d.save_screenshot(str(tmp_path / "case_list_lab.png"))
    lab_box.clear()
    lab_box.send_keys("lab-a" + Keys.ENTER)
    wait_for(lambda: rows(d) == [("caseA", "lab-a"), ("caseC", "lab-a")], "lab-a's two cases")
    lab_box.clear()
    lab_box.send_keys(Keys.ENTER)
    wait_for(lambda: rows(d) == every, "every lab again")


def test_a_reviewer_sees_their_lab_without_a_lab_filter(served, driver):
    d = driver
    log_in(d, served, "amy")
    wait_for(lambda: rows(d) == [("caseA", "lab-a"), ("caseC", "lab-a")], "amy's lab's cases")
    assert not d.find_element(By.ID, "search-lab").is_displayed()
    assert d.find_element(By.ID, "admin").get_attribute("hidden") is not None
