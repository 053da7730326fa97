"""Text from data files or models, made safe to print in a terminal.

Model answers, subject names and question ids are adversarial: an ANSI escape can clear the
screen or rewrite what a table shows, a bidi override can reverse it. Everything emkit prints
that came from a file or a model goes through `terminal_safe` (HTML has its own escaping in
`emkit.report.html`).
"""

from __future__ import annotations


def terminal_safe(text: object, limit: int | None = 200) -> str:
    """`text` with control and format characters (ANSI escapes, bidi overrides, newlines)
    shown as Python escapes, cut to `limit` characters (None: never cut)."""
    out = "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(text))
    return out if limit is None or len(out) <= limit else out[:limit - 1] + "\u2026"
