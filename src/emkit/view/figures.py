"""Figures the viewer serves besides the summary's: drawn by the report's own functions
(`emkit.report.monitor`), written atomically into the app's private figure directory under a
content-hash name, so a page never shows a half-written PNG and never writes into a run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from emkit.report.plots import save_png


def monitor_figure(points: list[dict[str, Any]], out_dir: Path) -> str:
    """The report's training-monitor figure of `points` (rows of `monitor_curve`); returns
    the PNG's file name in `out_dir`."""
    from emkit.report.monitor import monitor_figure as draw

    tag = hashlib.sha256(json.dumps(points, sort_keys=True, default=str).encode()).hexdigest()
    name = f"{tag[:16]}_monitor.png"
    if not (out_dir / name).is_file():
        out_dir.mkdir(parents=True, exist_ok=True)
        save_png(draw(pd.DataFrame(points)), out_dir / name)
    return name
