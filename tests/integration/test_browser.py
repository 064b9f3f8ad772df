"""The page of `attn serve` in a real browser: headless Chromium (Debian's chromium and
chromium-driver, through Selenium) against a live server that needs an API key. The page asks
for the key, then translates (output text and one heatmap cell per output x source piece, hover
highlighting) and classifies (label and one shaded token per piece)."""

from __future__ import annotations

import shutil
import signal

import pytest
from serve_helpers import LiveServer, tiny_runs

pytestmark = pytest.mark.browser

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
DRIVER = shutil.which("chromedriver")
if CHROMIUM is None or DRIVER is None:
    pytest.skip("the browser test needs Chromium and chromedriver (Debian: apt-get install chromium "
                "chromium-driver)", allow_module_level=True)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

KEY = "browser-test-key"


@pytest.fixture(scope="module")
def server():
    runs = tiny_runs()
    srv = LiveServer("-m", f"it-en={runs / 'translate'}", "-m", f"sst={runs / 'sentiment'}", "--quiet",
                     env={"ATTN_API_KEY": KEY})
    yield srv
    assert srv.stop(signal.SIGINT) == 0, srv.log  # Ctrl-C is a clean stop too


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions"):
        opts.add_argument(arg)
    try:
        driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    except WebDriverException as e:
        pytest.skip(f"Chromium did not start: {str(e).splitlines()[0]}")
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait(driver, condition, timeout=30):
    return WebDriverWait(driver, timeout).until(condition)


@pytest.fixture(scope="module")
def page(server, browser):
    browser.get(server.url + "/")
    card = wait(browser, lambda d: d.find_element(By.ID, "key-card"))
    wait(browser, lambda d: card.is_displayed())  # /v1/models answered 401: the page asks
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.CSS_SELECTOR, "#key-form button").click()
    wait(browser, lambda d: not card.is_displayed() and d.find_element(By.ID, "run").is_enabled())
    return browser


def run_text(page, model: str, text: str) -> None:
    Select(page.find_element(By.ID, "model")).select_by_value(model)
    box = page.find_element(By.ID, "text")
    box.clear()
    box.send_keys(text)
    page.find_element(By.ID, "run").click()


def test_page_lists_the_models_after_the_key(page):
    options = [o.get_attribute("value") for o in page.find_elements(By.CSS_SELECTOR, "#model option")]
    assert options == ["it-en", "sst"]
    assert "torch" in page.find_element(By.ID, "model-info").text


def test_translation_and_its_heatmap(page, server):
    text = "Sabato partirò per Londra."
    run_text(page, "it-en", text)
    cells = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#attention td.heat-cell"))
    status, api = server.call("/v1/translate", {"text": text, "model": "it-en", "attention": True}, key=KEY)
    assert status == 200
    out = api["outputs"][0]
    att = out["attention"]
    shown = page.find_element(By.CSS_SELECTOR, "#output .text").text
    assert shown.split() == out["text"].split() and shown.strip()
    assert len(cells) == len(att["output_pieces"]) * len(att["source_pieces"]) > 0
    assert len(page.find_elements(By.CSS_SELECTOR, "#attention th.out")) == len(att["output_pieces"])
    assert len(page.find_elements(By.CSS_SELECTOR, "#attention th.src")) == len(att["source_pieces"])
    ActionChains(page).move_to_element(cells[-1]).perform()  # the last cell: </s> x the last source piece
    row = page.find_elements(By.CSS_SELECTOR, "#attention th.out")[-1]
    wait(page, lambda d: "hl" in row.get_attribute("class"))
    assert "hot" in cells[-1].get_attribute("class")
    shaded = page.find_elements(By.CSS_SELECTOR, "#strips .strip:first-child .tok")
    assert len(shaded) == len(att["source_pieces"])
    assert any("--w: 1" in (t.get_attribute("style") or "") for t in shaded)  # the row's strongest source piece


def test_translation_keeps_paragraphs(page, server):
    text = "Ho fame. Dov'è la stazione?\n\nSabato partirò per Londra.\n\nGrazie."
    run_text(page, "it-en", text)  # send_keys types the line breaks as Enter (a new line, not a submit)
    status, api = server.call("/v1/translate", {"text": text, "model": "it-en", "attention": True}, key=KEY)
    assert status == 200 and api["outputs"][0]["text"].count("\n\n") == 2
    shown = wait(page, lambda d: d.execute_script(
        "const t = document.querySelector('#output .text'); return t && t.textContent.includes('\\n') "
        "? t.textContent : null"))
    assert shown == api["outputs"][0]["text"]  # the answer's line breaks, as the input had them


def test_sentiment_shading(page, server):
    text = "a gorgeous, witty film"
    run_text(page, "sst", text)
    toks = wait(page, lambda d: d.find_elements(By.CSS_SELECTOR, "#attention .sentence .tok"))
    status, api = server.call("/v1/sentiment", {"text": text, "model": "sst", "attention": True}, key=KEY)
    out = api["outputs"][0]
    assert status == 200 and len(toks) == len(out["attention"]["pieces"])
    assert page.find_element(By.CSS_SELECTOR, "#output .label").text.lower() == out["label"]
    assert all("--w" in (t.get_attribute("style") or "") for t in toks)
    assert len(page.find_elements(By.CSS_SELECTOR, "#probs .bar")) == 2
    assert page.find_elements(By.CSS_SELECTOR, "#attention td.heat-cell") == []  # the heatmap is gone
