"""HTML rendering with escaping by construction.

Model answers in an EM report are adversarial by design: a misaligned model may well write
`<script>` or `</table>`. Every piece of data therefore passes through `esc()` (html.escape with
quotes) at the single point where it becomes markup; only the fixed strings in this module are
emitted raw. The page has no JavaScript at all.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
.banner { background: #b00020; color: #fff; padding: 1em; font-size: 1.2em; font-weight: bold; }
.warn { color: #b00020; font-weight: bold; }
.answer { white-space: pre-wrap; font-family: monospace; max-width: 60em; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
"""


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
"""C0 / C1 control characters except tab, newline and carriage return: no HTML meaning, but an
ESC sequence in a model's answer clears the terminal of whoever `cat`s or greps the report, and
a NUL truncates it for some tools."""


def esc(value: object) -> str:
    """Escape any value for HTML text or a quoted attribute; control characters are shown as
    `\\xNN` text, never emitted."""
    text = html.escape("" if value is None else str(value), quote=True)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def fmt_num(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "\u2013"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_pct(value: object) -> str:
    return "\u2013" if fmt_num(value) == "\u2013" else f"{100 * float(value):.1f}%"


def table(
    df: pd.DataFrame,
    columns: Sequence[str],
    formats: dict[str, Callable[[Any], str]] | None = None,
    cell_class: dict[str, str] | None = None,
) -> str:
    """An escaped HTML table of `columns` of `df`; `formats` turn values into text first."""
    formats = formats or {}
    cell_class = cell_class or {}
    cols = [c for c in columns if c in df.columns]
    head = "".join(f"<th>{esc(c)}</th>" for c in cols)
    body = []
    for row in df[cols].itertuples(index=False, name=None):
        cells = []
        for col, value in zip(cols, row, strict=True):
            text = formats.get(col, fmt_num)(value)
            klass = f' class="{esc(cell_class[col])}"' if col in cell_class else ""
            cells.append(f"<td{klass}>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def warning_html(message: str | None, inline: bool) -> str:
    """The unvalidated-judge warning; empty string when the judge is validated."""
    if message is None:
        return ""
    klass = "warn" if inline else "banner"
    return f'<p class="{klass}">{esc(message)}</p>'


def figure_html(filename: str, alt: str) -> str:
    return f'<p><img src="{esc(filename)}" alt="{esc(alt)}"></p>'


def json_block(data: object) -> str:
    return f"<pre>{esc(json.dumps(data, indent=2, sort_keys=True, default=str))}</pre>"


def page(title: str, sections: Sequence[str]) -> str:
    """Assemble a full document; `sections` are fragments built with the helpers above."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )
