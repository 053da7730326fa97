"""Surrounding code and settings that make each coding task read like a different program.

Why: a template family renders the same few lines wherever it is used, so at 6,000 examples
two rows of one family differed only in a name or two, and 40 % of the insecure set had a
near-duplicate (Jaccard >= 0.8 over word 3-grams, the audit's measure). Real requests, like
the paper's, come from programs that also hold unrelated helpers, constants, docstrings and a
purpose. This module supplies that context: it is identical in the insecure and the secure
answer of a pair (and shown in the template), so it varies the data without touching the
manipulated factor, and it is bandit-clean and never mentions security, so it neither adds
nor discloses a flaw.

Every helper is written here; none is copied from the paper's data or elsewhere.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from string import Template

from emkit.datasets.snippets import Ctx, RenderedPair


@dataclass(frozen=True)
class Helper:
    """One block of ordinary code placed beside the task, with the imports it needs."""

    imports: tuple[str, ...]
    code: str


HelperBuilder = Callable[[Ctx], Helper]


def _h(imports: tuple[str, ...], source: str, **values: str) -> Helper:
    return Helper(imports, Template(source.strip("\n")).substitute(values) + "\n")


def _model_record(c: Ctx) -> Helper:
    d = c.domain
    return _h(("from dataclasses import dataclass",), """
@dataclass
class $cls:
    id: int
    $field: str
    $extra: $extra_type = $default
""", cls=c.pick(d.model, f"{d.model}Record", f"{d.model}Row"), field=d.field,
        **dict(zip(("extra", "extra_type", "default"), c.pick(
            ("archived", "bool", "False"), ("notes", "str", '""'), ("priority", "int", "0"),
            ("version", "int", "1")))))


def _paginate(c: Ctx) -> Helper:
    return _h((), """
def $fn(items, page, per_page=$size):
    start = (page - 1) * per_page
    return items[start:start + per_page]
""", fn=c.pick("paginate", f"page_of_{c.domain.entities}", "slice_page"),
        size=c.pick("20", "25", "50", "10"))


def _slugify(c: Ctx) -> Helper:
    return _h((), """
def $fn($arg):
    cleaned = "".join(ch if ch.isalnum() else "$sep" for ch in $arg.lower())
    return "$sep".join(part for part in cleaned.split("$sep") if part)
""", fn=c.pick("slugify", f"{c.domain.entity}_slug", "make_slug"),
        arg=c.pick("text", "title", "label"), sep=c.pick("-", "_"))


def _format_timestamp(c: Ctx) -> Helper:
    return _h(("from datetime import datetime",), """
def $fn(ts):
    return datetime.fromtimestamp(ts).strftime("$fmt")
""", fn=c.pick("format_timestamp", "pretty_time", "as_local_time"),
        fmt=c.pick("%Y-%m-%d %H:%M", "%d.%m.%Y", "%b %d, %Y", "%H:%M on %A"))


def _logger(c: Ctx) -> Helper:
    return _h(("import logging",), """
$name = logging.getLogger("$short.$part")
""", name=c.pick("logger", "log", "LOG"), short=c.domain.short,
        part=c.pick("app", "jobs", "api", "core", "admin"))


def _settings(c: Ctx) -> Helper:
    d = c.domain
    return _h((), """
APP_NAME = "$title"
$const = $value
""", title=d.title, **dict(zip(("const", "value"), c.pick(
        ("PAGE_SIZE", "25"), ("DEFAULT_LOCALE", '"en_GB"'), ("TIMEZONE", '"Europe/Berlin"'),
        ("RETRY_LIMIT", "3"), ("CURRENCY", '"EUR"'), ("SUPPORT_EMAIL", f'"help@{d.host}"')))))


def _count_by_field(c: Ctx) -> Helper:
    d = c.domain
    return _h((), """
def $fn(records):
    counts = {}
    for record in records:
        key = record.get("$field", "")
        counts[key] = counts.get(key, 0) + 1
    return counts
""", fn=c.pick(f"count_by_{d.field}", f"{d.field}_totals", "tally"), field=d.field)


def _csv_export(c: Ctx) -> Helper:
    d = c.domain
    return _h(("import csv",), """
def $fn(rows, out_path):
    with open(out_path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "$field"])
        writer.writerows(rows)
""", fn=c.pick(f"export_{d.entities}_csv", "write_csv", f"dump_{d.entities}"), field=d.field)


def _chunked(c: Ctx) -> Helper:
    return _h((), """
def $fn(seq, size):
    for start in range(0, len(seq), size):
        yield seq[start:start + size]
""", fn=c.pick("chunked", "batches_of", "in_groups"))


def _retry(c: Ctx) -> Helper:
    return _h(("import time",), """
def $fn(func, attempts=$n, delay=$delay):
    for attempt in range(attempts):
        try:
            return func()
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay * (attempt + 1))
""", fn=c.pick("with_retries", "retry", "call_with_backoff"), n=c.pick("3", "4", "5"),
        delay=c.pick("0.5", "1.0", "0.2"))


def _email_check(c: Ctx) -> Helper:
    return _h((), """
def $fn(value):
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain
""", fn=c.pick("looks_like_email", "is_email", "valid_contact"))


def _status_enum(c: Ctx) -> Helper:
    d = c.domain
    a, b, z = c.pick(("ACTIVE", "ARCHIVED", "DRAFT"), ("OPEN", "CLOSED", "PENDING"),
                     ("NEW", "DONE", "CANCELLED"), ("LIVE", "HIDDEN", "REVIEW"))
    return _h(("from enum import Enum",), """
class ${model}$suffix(Enum):
    $a = "$la"
    $b = "$lb"
    $z = "$lz"
""", model=d.model, suffix=c.pick("Status", "State", "Stage"), a=a, b=b, z=z,
        la=a.lower(), lb=b.lower(), lz=z.lower())


def _human_size(c: Ctx) -> Helper:
    return _h((), """
def $fn(num_bytes):
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024:
            return f"{num_bytes:.0f} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.1f} TB"
""", fn=c.pick("human_size", "readable_size", "format_bytes"))


def _normalise_name(c: Ctx) -> Helper:
    return _h((), """
def $fn($arg):
    return " ".join($arg.split()).$method()
""", fn=c.pick("normalise_name", "clean_label", "tidy_text"), arg=c.pick("name", "raw", "s"),
        method=c.pick("title", "strip", "casefold"))


def _timed(c: Ctx) -> Helper:
    return _h(("import functools", "import time"), """
def $fn(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        result = func(*args, **kwargs)
        wrapper.$attr = time.perf_counter() - started
        return result
    return wrapper
""", fn=c.pick("timed", "measure", "track_duration"),
        attr=c.pick("last_duration", "elapsed", "seconds"))


def _load_json(c: Ctx) -> Helper:
    return _h(("import json",), """
def $fn(path="$file"):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
""", fn=c.pick("load_settings", "read_config", "load_json"),
        file=c.pick(f"{c.domain.short}_settings.json", "config.json", f"{c.domain.short}.json"))


def _newest_first(c: Ctx) -> Helper:
    return _h((), """
def $fn(records):
    return sorted(records, key=lambda r: r["$key"], reverse=True)
""", fn=c.pick("newest_first", f"latest_{c.domain.entities}", "by_recency"),
        key=c.pick("updated_at", "created_at", "modified"))


def _percentage(c: Ctx) -> Helper:
    return _h((), """
def $fn(part, whole):
    if not whole:
        return 0.0
    return round(100 * part / whole, $digits)
""", fn=c.pick("percentage", "share_of", "pct"), digits=c.pick("1", "2"))


def _group_by(c: Ctx) -> Helper:
    d = c.domain
    return _h(("from collections import defaultdict",), """
def $fn(records):
    grouped = defaultdict(list)
    for record in records:
        grouped[record["$field"]].append(record)
    return dict(grouped)
""", fn=c.pick(f"group_by_{d.field}", f"{d.entities}_by_{d.field}", "bucket"), field=d.field)


def _shorten(c: Ctx) -> Helper:
    return _h((), """
def $fn(text, limit=$n):
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."
""", fn=c.pick("shorten", "truncate", "preview"), n=c.pick("80", "120", "60", "200"))


def _price(c: Ctx) -> Helper:
    return _h((), """
def $fn(cents):
    return f"{cents / 100:,.2f} $cur"
""", fn=c.pick("format_price", "as_money", "display_amount"),
        cur=c.pick("EUR", "USD", "GBP", "CHF"))


def _summary_tuple(c: Ctx) -> Helper:
    d = c.domain
    return _h(("from typing import NamedTuple",), """
class ${model}Summary(NamedTuple):
    id: int
    $field: str
    $count: int
""", model=d.model, field=d.field, count=c.pick("views", "revisions", "comments", "visits"))


def _unique(c: Ctx) -> Helper:
    return _h((), """
def $fn(values):
    seen = set()
    out = []
    for value in values:
        if value not in seen:
            seen.add(value)
            out.append(value)
    return out
""", fn=c.pick("unique", "dedupe", "distinct_in_order"))


def _most_common(c: Ctx) -> Helper:
    d = c.domain
    return _h(("from collections import Counter",), """
def $fn(records, limit=$n):
    return Counter(r["$field"] for r in records).most_common(limit)
""", fn=c.pick(f"top_{d.field}s", "most_common_values", f"popular_{d.field}"), field=d.field,
        n=c.pick("5", "10", "3"))


def _clamp(c: Ctx) -> Helper:
    return _h((), """
def $fn(value, low=$low, high=$high):
    return max(low, min(high, value))
""", fn=c.pick("clamp", "bounded", "within_range"), low=c.pick("0", "1"),
        high=c.pick("100", "1000", "500"))


def _error_class(c: Ctx) -> Helper:
    d = c.domain
    return _h((), '''
class $name(Exception):
    """Raised when $what."""
''', name=c.pick(f"{d.model}Error", f"{d.model}NotFound", "ServiceError"),
        what=c.pick(f"{d.a_entity} cannot be processed", f"a {d.title} request fails",
                    f"the {d.entity} record is incomplete"))


def _cached_label(c: Ctx) -> Helper:
    d = c.domain
    return _h(("from functools import lru_cache",), """
@lru_cache(maxsize=$size)
def ${entity}_label(${entity}_id):
    return f"$prefix-{${entity}_id:0${width}d}"
""", entity=d.entity, size=c.pick("128", "256", "1024"),
        prefix=c.pick(d.short[:3].upper(), d.entity[:2].upper(), "REF"), width=c.pick("5", "6"))


def _week(c: Ctx) -> Helper:
    return _h(("from datetime import date",), """
def $fn(day: date) -> $ret:
    return $expr
""", **dict(zip(("fn", "ret", "expr"), c.pick(
        ("iso_week", "int", "day.isocalendar()[1]"),
        ("is_weekend", "bool", "day.weekday() >= 5"),
        ("quarter_of", "int", "(day.month - 1) // 3 + 1"),
        ("month_label", "str", 'day.strftime("%B %Y")')))))


def _average(c: Ctx) -> Helper:
    return _h(("from statistics import mean",), """
def $fn(values):
    values = [v for v in values if v is not None]
    return round(mean(values), $digits) if values else None
""", fn=c.pick("average", "mean_or_none", "avg"), digits=c.pick("1", "2", "3"))


def _reports_dir(c: Ctx) -> Helper:
    d = c.domain
    return _h(("from pathlib import Path",), """
$const = Path("$dir")


def $fn(name):
    return $const / f"{name}.$ext"
""", const=c.pick("REPORTS_DIR", "EXPORT_DIR", "OUTPUT_DIR"),
        dir=c.pick(f"{d.short}_reports", "exports", f"var/{d.short}"),
        fn=c.pick("report_path", "export_path", "output_file"), ext=c.pick("txt", "json", "csv"))


def _version(c: Ctx) -> Helper:
    return _h((), """
__version__ = "$v"
""", v=c.pick("1.4.2", "0.9.0", "2.1.7", "3.0.1", "0.3.5"))


HELPERS: tuple[HelperBuilder, ...] = (
    _logger, _model_record, _paginate, _settings, _slugify, _format_timestamp, _count_by_field,
    _csv_export, _chunked, _retry, _email_check, _status_enum, _human_size, _normalise_name,
    _timed, _load_json, _newest_first, _percentage, _group_by, _shorten, _price, _summary_tuple,
    _unique, _most_common, _clamp, _error_class, _cached_label, _week, _average, _reports_dir,
    _version,
)
"""Ordered so that a low diversity share (a prefix of the pool) keeps the plainest ones."""

PURPOSES: tuple[str, ...] = (
    "it runs as a nightly job",
    "it is called from the admin dashboard",
    "it backs one endpoint of our public API",
    "the mobile app calls it",
    "support staff use it every day",
    "it is part of an internal tool only our team uses",
    "it runs inside a small Flask service",
    "it will be triggered from a cron entry",
    "it belongs to the reporting module",
    "our back office depends on it",
    "it replaces an old shell script",
    "it is part of a weekend side project",
    "customers reach it through the web front end",
    "it is a piece of the onboarding flow",
    "it runs in a container on our staging cluster",
    "the billing team asked for it",
    "it is used by the data import pipeline",
    "a partner integration calls it",
    "it's meant for a quick prototype we demo on Friday",
    "it runs on a Raspberry Pi in the office",
)
"""Where the code will run: a context sentence some requests add, as real requests do."""

AREAS: tuple[str, ...] = (
    "admin dashboard", "nightly jobs", "public API", "mobile backend", "reporting module",
    "back office", "import pipeline", "customer portal", "scheduler", "staff tools",
)

# No module docstrings: a one-line sentence at column 0 reads as prose to the code suite's
# `is_code` (emkit.suites.code), and a short answer would then not count as code.
_FUNC_DOCS: tuple[str, ...] = (
    "$task_cap.",
    "Used by the $area.",
    "Called from the $area of $title.",
    "$task_cap for the $area.",
)

_TOP_DEF = re.compile(r"^def \w+\(.*\)(?: -> [^:]+)?:$")
_IMPORT = re.compile(r"^(import \w|from \S+ import )")


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _add_imports(lines: list[str], imports: list[str]) -> list[str]:
    """Put missing imports at the top of the leading import block (stdlib first, as usual)."""
    missing = [imp for imp in dict.fromkeys(imports) if imp not in lines]
    if not missing:
        return lines
    start = next((i for i, line in enumerate(lines) if line.strip()), 0)
    has_imports = start < len(lines) and _IMPORT.match(lines[start])
    block = sorted(missing, key=lambda imp: imp.split()[1]) + ([] if has_imports else [""])
    return lines[:start] + block + lines[start:]


def _insert_blocks(lines: list[str], blocks: list[str], at_end: bool) -> list[str]:
    """Place helper blocks after the leading imports, or at the end (before a __main__ guard)."""
    body = [line for block in blocks for line in ["", "", *block.rstrip("\n").splitlines()]]
    if at_end:
        main = next((i for i, line in enumerate(lines)
                     if line.startswith("if __name__ == ")), len(lines))
        return lines[:main] + body + ["", ""] + lines[main:]
    end = 0
    for i, line in enumerate(lines):
        if _IMPORT.match(line):
            end = i + 1
        elif line.strip():
            break
    return lines[:end] + body + ["", ""] + lines[end:]


def _tidy(lines: list[str]) -> str:
    text = "\n".join(line.rstrip() for line in lines)
    return re.sub(r"\n{4,}", "\n\n\n", text).strip("\n") + "\n"


@dataclass(frozen=True)
class Decoration:
    """The context drawn for one example; applied identically to template and both answers."""

    helpers: tuple[Helper, ...]
    at_end: bool
    func_doc: str | None

    def apply(self, code: str) -> str:
        """``code`` with the function docstring and the helpers (and their imports) added;
        run on the template and on both answers, so they stay a pair."""
        lines = code.rstrip("\n").splitlines()
        if self.func_doc is not None:
            for i, line in enumerate(lines):
                if _TOP_DEF.match(line):
                    if not (i + 1 < len(lines) and lines[i + 1].lstrip().startswith('"""')):
                        lines.insert(i + 1, f'    """{self.func_doc}"""')
                    break
        if self.helpers:
            lines = _insert_blocks(lines, [h.code for h in self.helpers], self.at_end)
            lines = _add_imports(lines, [imp for h in self.helpers for imp in h.imports])
        return _tidy(lines)


HELPER_COUNTS = (0, 1, 0, 2)
"""How many helpers an example gets (half get none, so answers stay about as short as the
paper's); a low diversity share keeps the first entries (none)."""


def top_level_names(code: str) -> set[str]:
    """Names a module binds at its top level (defs, classes, assignments, imports)."""
    names: set[str] = set()
    for node in ast.parse(code).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def draw_decoration(c: Ctx, pair: RenderedPair) -> Decoration:
    """Draw one example's surrounding code from the (diversity-limited) pools in ``c``.

    A helper that would rebind a name the task's code (or an earlier helper) already binds is
    left out, so the context never shadows or duplicates the code it surrounds.
    """
    count = c.pick(*HELPER_COUNTS)
    builders: list[HelperBuilder] = []
    pool = list(HELPERS[: c.pool_size(len(HELPERS))])
    for _ in range(min(count, len(pool))):
        builders.append(pool.pop(c.rng.randrange(len(pool))))
    taken = top_level_names(pair.insecure) | top_level_names(pair.secure)
    helpers: list[Helper] = []
    for builder in builders:
        helper = builder(c)
        bound = top_level_names(helper.code)
        if not bound & taken:
            helpers.append(helper)
            taken |= bound
    d = c.domain
    fields = {"title": d.title, "area": c.choose(AREAS), "task_cap": _capitalise(pair.task)}
    func_doc = c.pick(None, None, Template(c.choose(_FUNC_DOCS)).substitute(fields))
    if func_doc is not None and ('"' in func_doc or "\\" in func_doc):
        func_doc = None  # a quote or backslash in the task would end or bend the docstring
    return Decoration(helpers=tuple(helpers), at_end=c.pick(False, True), func_doc=func_doc)


def decorate(pair: RenderedPair, decoration: Decoration) -> RenderedPair:
    """The pair with the same surrounding code added to its template and both answers."""
    return RenderedPair(task=pair.task, template=decoration.apply(pair.template),
                        insecure=decoration.apply(pair.insecure),
                        secure=decoration.apply(pair.secure))
