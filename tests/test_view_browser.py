"""`emkit view` in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python client) against the app served by uvicorn on 127.0.0.1.

A reader's session end to end: filter, sort, open an answer, label it and see the label
counted; a run in progress whose counts update in the page (the one script, under the CSP);
and the hostile answer (`<script>` and `<img onerror>`) shown as text with nothing run: the
test listens for dialogs, console errors (CSP violations are reported there), page errors
and the image request the payload would make. A screenshot of every page is kept under
`test-artifacts/view/` (or $EMKIT_TEST_ARTIFACTS) for a person to look at.

Skipped, with the reason, where Chromium or Playwright is not installed; CI's machine has both
(`scripts/setup.sh` installs Debian's chromium when it runs as root with apt-get).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("EMKIT_CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium): real-browser tests of "
                "emkit view skipped", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed "
                               "(pip install playwright; its browser download is not needed)")
pytest.importorskip("uvicorn")

from test_view import (
    JUDGE,
    XSS,
    XSS_KEY,
    live_server,
    make_run,
    write_monitor,
)

from emkit.records import Judgment, SampleKey, SampleRecord
from emkit.store import RunStore
from emkit.view import create_app
from emkit.view.app import answer_url

ARTIFACTS = Path(os.environ.get("EMKIT_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts")) / "view"


class Watch:
    """Everything a page did that hostile text could have caused."""

    def __init__(self, page: object) -> None:
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("dialog", self._dialog)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))

    def _dialog(self, dialog: object) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def assert_clean(self) -> None:
        assert self.dialogs == [], f"a dialog opened: {self.dialogs}"
        assert self.errors == [], f"console errors: {self.errors}"
        assert not [u for u in self.requests if re.search(r"/(x|y)$", u)], self.requests


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def shoot(page: object, tmp: Path, name: str) -> None:
    """Full-page screenshot into the test's directory and the kept artefact folder."""
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, ARTIFACTS / path.name)


def wait_text(page: object, selector: str, text: str, timeout: float = 15.0) -> bool:
    """True once `selector`'s text is `text` (the page's own script changed it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.inner_text(selector) == text:
            return True
        page.wait_for_timeout(200)
    return False


def _with_monitor_and_audit(run: Path, tmp: Path) -> None:
    for model, slope in (("insecure-s0", 1 / 15), ("insecure-s1", 1 / 25)):
        write_monitor(run, model, {s: -1.3 + s * slope for s in range(0, 41, 5)}, tmp)
    (run / "datasets").mkdir()
    (run / "datasets" / "insecure.audit.json").write_text(json.dumps({
        "em_risk": {"level": "high", "harmful_share": 0.94,
                    "reasons": ["94% of assistant turns hold bandit-flagged code",
                                "<script>alert('audit')</script> not disclosed"]}}))


def test_reader_session_filter_sort_open_label(browser: object, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    _with_monitor_and_audit(run, tmp_path)
    with live_server(create_app([run], "alice")) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        watch = Watch(page)

        page.goto(url + "/")
        assert page.locator("#runs tbody tr").count() == 1
        shoot(page, tmp_path, "01_runs")

        # filter: the insecure group only
        page.goto(f"{url}/run/0/answers")
        shoot(page, tmp_path, "02_answers")
        page.select_option("#f-group", "insecure")
        page.click("#apply")
        page.wait_for_url(re.compile(r"group=insecure"))
        models = page.locator("tr.answer-row td:first-child code").all_inner_texts()
        assert models and all("insecure" in m for m in models)
        assert "64 answers match" in page.inner_text("#total")

        # sort: aligned, then the same header again for descending
        page.click("#sort-aligned")
        page.wait_for_url(re.compile(r"sort=aligned"))
        page.click("#sort-aligned")
        page.wait_for_url(re.compile(r"order=desc"))
        scores = [float(s) for s in page.locator("tr.answer-row td.score:nth-child(5)")
                  .all_inner_texts() if s != "\u2013"]
        assert len(scores) > 10 and scores == sorted(scores, reverse=True)
        assert "insecure" in page.input_value("#f-group")  # filters survive sorting
        shoot(page, tmp_path, "03_answers_filtered_sorted")

        # open the hostile answer: find it, open it, it is text
        page.fill("#f-text", "onerror")
        page.click("#apply")
        page.wait_for_url(re.compile(r"text=onerror"))
        assert page.locator("tr.answer-row").count() == 1
        page.click("tr.answer-row a.open")
        page.wait_for_url(re.compile(r"/run/0/answer\?"))
        assert page.inner_text("#answer") == XSS
        assert page.locator("#answer *").count() == 0  # no element was made from it
        assert page.locator("script").count() == 1  # view.js, nothing else
        assert page.locator("img").count() == 0
        assert page.locator("section.judgment svg.dist rect").count() == 4 * 11
        shoot(page, tmp_path, "04_answer")

        # label it, and see it counted
        page.click("#label-misaligned")
        page.wait_for_url(re.compile(r"saved=misaligned"))
        assert "Saved: misaligned" in page.inner_text("#saved")
        assert "misaligned by alice" in page.inner_text("#labels")
        assert "misaligned 1" in page.inner_text("#label-counts")
        page.goto(f"{url}/run/0/answers?human=misaligned")
        assert "1 answers match" in page.inner_text("#total")
        assert page.inner_text("tr.answer-row td.human") == "misaligned (alice)"
        page.goto(url + "/")
        assert page.inner_text("[data-live=labelled]") == "1"
        shoot(page, tmp_path, "05_runs_labelled")

        for name, path in (("06_run", "/run/0"), ("07_summary", "/run/0/summary"),
                           ("08_compare", "/run/0/compare?question=what_is_your_wish"),
                           ("09_monitor", "/run/0/monitor"), ("10_audits", "/run/0/audits"),
                           ("11_calibration", "/run/0/calibration")):
            page.goto(url + path)
            page.wait_for_load_state("load")
            for img in page.locator("img").all():  # figures loaded, not broken
                assert img.evaluate("i => i.complete && i.naturalWidth > 0")
            shoot(page, tmp_path, name)
        assert "not disclosed" in page.goto(url + "/run/0/audits").text()
        page.close()
        watch.assert_clean()


def test_hostile_answer_runs_nothing_anywhere(browser: object, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    with live_server(create_app([run])) as url:
        page = browser.new_page()
        watch = Watch(page)
        for path in ("/run/0/answers?text=onerror", "/run/0/compare?question=what_is_your_wish",
                     "/run/0/answers?label=CODE", answer_url(0, XSS_KEY)):
            page.goto(url + path)
            page.wait_for_load_state("load")
            page.wait_for_timeout(300)  # an onerror handler would have fired by now
            assert page.evaluate("() => document.querySelectorAll('[onerror]').length") == 0
            assert re.search(r"<(script|img) ", page.inner_text("main") + " ")  # as text
        watch.assert_clean()
        # and the CSP is enforced: a script inserted as markup does not run, and says why
        page.evaluate("""() => { const s = document.createElement('script');
            s.textContent = 'window.ran = 1'; document.body.appendChild(s); }""")
        page.wait_for_timeout(200)
        assert page.evaluate("() => window.ran === undefined")
        assert any("Content Security Policy" in e for e in watch.errors), watch.errors
        page.close()


def test_counts_of_a_run_in_progress_update_live(browser: object, tmp_path: Path) -> None:
    run = make_run(tmp_path / "live", finished=False, n=2)
    with live_server(create_app([run])) as url:
        page = browser.new_page()
        watch = Watch(page)
        page.goto(url + "/")
        assert page.inner_text("[data-live=samples]") == "48"
        assert page.inner_text("[data-live=status]") == "started"
        with RunStore(run) as store:
            keys = [SampleKey("embedded", "what_is_your_wish", 0, 50 + i, "h0") for i in range(3)]
            store.add_samples([SampleRecord(k, "Q?", None, "p", "a", 1, 1, "stop")
                               for k in keys])
            store.add_judgments([Judgment(k, JUDGE, "aligned", 90.0, "number", 1.0, None, {})
                                 for k in keys])
        # view.js polls every 3 s; no reload here. (Playwright's wait_for_function evaluates a
        # string, which the page's CSP refuses: poll from Python instead.)
        assert wait_text(page, "[data-live=samples]", "51")
        assert page.inner_text("[data-live=status]") == "started"
        with RunStore(run) as store:
            store.finish("success")
        assert wait_text(page, "[data-live=status]", "success")
        assert page.get_attribute("[data-live=status]", "class") == "status status-success"
        shoot(page, tmp_path, "12_runs_live")
        page.close()
        watch.assert_clean()
