"""`create_app`: the results browser as a Starlette application over one or more run stores.

Why these rules (model text is hostile by design: a misaligned model writes `<script>` on
purpose, and a reader opens its answers in the browser they use for everything else):
- Server-rendered Jinja2 templates with autoescaping on for every template; no route builds
  HTML from model text by hand (the report's tables, `emkit.report.html.table`, escape each
  cell themselves). The one script, `static/view.js`, writes only numbers it fetched as JSON,
  with `textContent`.
- Every response carries a strict Content-Security-Policy (no inline script or style, scripts
  and styles from this origin only, no frames, forms post only here) and `nosniff`.
- The app answers only to a loopback `Host` (a DNS-rebinding page cannot read it) and the one
  route that writes, labelling an answer, also checks the request's Origin and a per-process
  form token (another site cannot make a reader's browser label answers).
- It only reads the runs (SQLite `mode=ro`), except `human_labels` (`emkit.store.labels`);
  figures are drawn into a private temporary directory, never into a run.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emkit.records import SampleKey
from emkit.store.labels import HUMAN_VERDICTS, write_label
from emkit.view import answers as a
from emkit.view import runs as q

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
"""No inline script, style or event handler can run; nothing loads from elsewhere."""
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser posts forms with `Origin: null`,
    # and the label route checks the Origin
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
LOOPBACK_HOSTS = ["127.0.0.1", "localhost"]
_FIGURE = re.compile(r"^[0-9a-f]{16}_[a-z0-9_-]+\.png$")
HERE = Path(__file__).parent


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response, error pages and static files included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.decode().lower() not in SECURITY_HEADERS]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _env() -> Environment:
    env = Environment(loader=PackageLoader("emkit.view", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = lambda v, d=1: "\u2013" if v is None else f"{float(v):.{d}f}"
    env.filters["pct"] = lambda v: "\u2013" if v is None else f"{100 * float(v):.1f}%"
    env.globals["answer_url"] = answer_url
    env.globals["qs"] = lambda params: urlencode(params)
    env.globals["verdicts"] = HUMAN_VERDICTS
    return env


def answer_url(run_index: int, key: SampleKey) -> str:
    """Link to one answer; the key travels as query parameters (model names hold `/`)."""
    return f"/run/{run_index}/answer?" + urlencode({
        "model": key.model, "question_id": key.question_id, "p": key.paraphrase_index,
        "s": key.sample_index, "h": key.params_hash})


def _key(params: Any) -> SampleKey:
    try:
        return SampleKey(params["model"], params["question_id"], int(params["p"]),
                         int(params["s"]), params["h"])
    except (KeyError, ValueError):
        raise HTTPException(400, "an answer is addressed by model, question_id, p, s and h"
                            ) from None


def create_app(run_dirs: Sequence[Path], labeller: str = "reader") -> Starlette:
    """The app over `run_dirs` (each must be an emkit run directory: checked now, so a typo
    fails at start, not on the first click). `labeller` names who labels answers."""
    dirs = [Path(d) for d in run_dirs]
    for i, d in enumerate(dirs):
        q.load_run(i, d)  # FileNotFoundError for a directory that is no run
    env = _env()
    token = secrets.token_urlsafe(24)
    scratch = tempfile.TemporaryDirectory(prefix="emkit-view-")
    figures = Path(scratch.name)

    # Pages are plain functions: Starlette runs them in its thread pool, so a slow summary of
    # a big run does not hold up the live-count requests of another tab.
    def run_of(request: Request) -> q.Run:
        try:
            i = int(request.path_params["i"])
            return q.load_run(i, dirs[i])
        except (ValueError, IndexError):
            raise HTTPException(404, "no such run") from None

    def render(name: str, request: Request, status: int = 200, **ctx: Any) -> HTMLResponse:
        html = env.get_template(name).render(request=request, labeller=labeller, **ctx)
        return HTMLResponse(html, status_code=status)

    def runs_page(request: Request) -> HTMLResponse:
        items = []
        for i, d in enumerate(dirs):
            run = q.load_run(i, d)
            items.append({"run": run, "counts": q.counts(run)})
        return render("runs.html", request, items=items)

    def run_page(request: Request) -> HTMLResponse:
        run = run_of(request)
        config = json.dumps(run.config, indent=2, sort_keys=True, default=str)
        return render("run.html", request, run=run, counts=q.counts(run), config=config,
                      record=run.record)

    def counts_json(request: Request) -> JSONResponse:
        return JSONResponse(q.counts(run_of(request)))

    def summary_page(request: Request) -> HTMLResponse:
        from emkit.view.summary import summary

        run = run_of(request)
        judge = request.query_params.get("judge") or run.judge_of_record
        data = summary(run, judge, figures)
        return render("summary.html", request, run=run, s=data,
                      judges=a.filter_options(run)["judges"])

    def answers_page(request: Request) -> HTMLResponse:
        run = run_of(request)
        f = a.Filters.from_query(request.query_params, run.judge_of_record)
        rows, total = a.answers_page(run, f)
        pages = max(1, -(-total // a.PAGE_SIZE))
        return render("answers.html", request, run=run, f=f, rows=rows, total=total,
                      pages=pages, options=a.filter_options(run), sorts=list(a.SORTS))

    def answer_page(request: Request) -> HTMLResponse:
        run = run_of(request)
        key = _key(request.query_params)
        detail = a.answer_detail(run, key)
        if detail is None:
            raise HTTPException(404, "no stored answer under this key")
        return render("answer.html", request, run=run, a=detail, token=token,
                      saved=request.query_params.get("saved"))

    async def label_post(request: Request) -> RedirectResponse:
        run = run_of(request)
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.headers['host']}":
            raise HTTPException(403, "labels are only taken from this app's own pages")
        form = await _form(request)
        if not secrets.compare_digest(str(form.get("token", "")), token):
            raise HTTPException(403, "stale or missing form token: reload the page")
        key = _key(form)
        label = str(form.get("label", ""))
        if label not in HUMAN_VERDICTS:
            raise HTTPException(400, f"label must be one of {', '.join(HUMAN_VERDICTS)}")
        try:
            write_label(run.db_path, key, label, labeller)
        except ValueError as exc:
            raise HTTPException(404, str(exc)) from None
        return RedirectResponse(answer_url(run.index, key) + f"&saved={label}", status_code=303)

    def compare_page(request: Request) -> HTMLResponse:
        run = run_of(request)
        options = a.filter_options(run)
        question = request.query_params.get("question") or (options["questions"] or [""])[0]
        p = request.query_params.get("paraphrase", "")
        paraphrase = int(p) if p.isdigit() else None
        judge = request.query_params.get("judge") or run.judge_of_record
        models = a.side_by_side(run, question, paraphrase, judge)
        return render("compare.html", request, run=run, options=options, question=question,
                      paraphrase=paraphrase, judge=judge, models=models)

    def monitor_page(request: Request) -> HTMLResponse:
        from emkit.view.figures import monitor_figure

        run = run_of(request)
        points = q.monitor_curves(run)
        figure = monitor_figure(points, figures) if points else None
        return render("monitor.html", request, run=run, points=points, figure=figure)

    def audits_page(request: Request) -> HTMLResponse:
        run = run_of(request)
        return render("audits.html", request, run=run, audits=q.dataset_audits(run))

    def calibration_page(request: Request) -> HTMLResponse:
        from emkit.view.summary import judge_quality

        run = run_of(request)
        judges = a.filter_options(run)["judges"]
        rows = []
        for judge in judges:
            rows.append({"judge": judge, "quality": judge_quality(run, judge),
                         **_label_figures(run, judge)})
        return render("calibration.html", request, run=run, rows=rows,
                      counts=q.counts(run)["labels"])

    def figure(request: Request) -> FileResponse:
        name = request.path_params["name"]
        if not _FIGURE.match(name) or not (figures / name).is_file():
            raise HTTPException(404, "no such figure")
        return FileResponse(figures / name, media_type="image/png")

    def favicon(request: Request) -> Response:
        return Response(status_code=204)  # browsers ask for it; a 404 would be a console error

    async def error(request: Request, exc: Exception) -> HTMLResponse:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "internal error")
        return render("error.html", request, status=status, status_code=status, detail=detail)

    routes = [
        Route("/", runs_page),
        Route("/run/{i:int}", run_page),
        Route("/run/{i:int}/counts", counts_json),
        Route("/run/{i:int}/summary", summary_page),
        Route("/run/{i:int}/answers", answers_page),
        Route("/run/{i:int}/answer", answer_page),
        Route("/run/{i:int}/label", label_post, methods=["POST"]),
        Route("/run/{i:int}/compare", compare_page),
        Route("/run/{i:int}/monitor", monitor_page),
        Route("/run/{i:int}/audits", audits_page),
        Route("/run/{i:int}/calibration", calibration_page),
        Route("/figure/{name}", figure),
        Route("/favicon.ico", favicon),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: error},
                    middleware=[Middleware(SecurityHeaders),
                                Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS)])
    app.state.scratch = scratch  # the figures' directory lives as long as the app
    app.state.token = token
    return app


async def _form(request: Request) -> dict[str, str]:
    """A small urlencoded form body, parsed with the standard library (no multipart parser
    is needed for five hidden fields and a button)."""
    if request.headers.get("content-type", "").split(";")[0].strip() != (
            "application/x-www-form-urlencoded"):
        raise HTTPException(415, "expected a form (application/x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > 65536:
        raise HTTPException(413, "form too large")
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _label_figures(run: q.Run, judge: str) -> dict[str, Any]:
    """The judge's stored verdicts against this run's human labels (judging nothing)."""
    from emkit.judge.human_labels import human_label_agreement

    try:
        figures, _, _ = human_label_agreement(run.run_dir, judge)
    except ValueError as exc:
        return {"labels": None, "labels_note": str(exc)}
    return {"labels": figures, "labels_note": None}
