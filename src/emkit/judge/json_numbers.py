"""How judge files write their numbers.

Why a module of its own: the heads (`distilled.py`) and the lexical ridge (`lexical.py`) write
arrays into the same `judge.json` with the same precision, and `distilled.py` imports
`lexical.py`; kept here, neither has to import the other to share it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def short_floats(a: Any) -> Any:
    """Nested lists of floats at 8 significant digits (float32 precision): a third of the
    file size of full repr, identical predictions to ~1e-6."""
    return np.vectorize(lambda v: float(f"{v:.8g}"), otypes=[float])(np.asarray(a)).tolist()
