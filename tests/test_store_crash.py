"""A writer killed with SIGKILL mid-stream leaves a consistent, resumable database."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from emkit.records import SampleKey, SampleRecord
from emkit.store import RunStore

TOTAL, BATCH = 2000, 10

WRITER = textwrap.dedent(
    f"""
    import sys
    from pathlib import Path
    from emkit.records import SampleKey, SampleRecord
    from emkit.store import RunStore

    store = RunStore(Path(sys.argv[1]))
    keys = [SampleKey("m", f"q{{i // 100}}", 0, i, "h") for i in range({TOTAL})]
    todo = store.missing_samples(keys)
    for start in range(0, len(todo), {BATCH}):
        batch = [SampleRecord(k, "q", None, "p", "x" * 20000, 1, 5, "stop")
                 for k in todo[start:start + {BATCH}]]
        store.add_samples(batch)
        print(start + len(batch), flush=True)
    print("done", flush=True)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_mid_stream_then_resume(tmp_path: Path):
    run_dir = tmp_path / "run"
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    committed = 0
    for line in proc.stdout:  # wait until a few transactions are durably committed
        committed = int(line)
        if committed >= 5 * BATCH:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    con = sqlite3.connect(run_dir / "emkit.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    with RunStore(run_dir) as store:
        n = store.count_samples()
        assert committed <= n < TOTAL, "killed too late to test anything"
        assert n % BATCH == 0, "a partial transaction became visible"

    # Resume in a fresh process; it must add exactly the missing rows.
    out = subprocess.run(
        [sys.executable, str(script), str(run_dir)], capture_output=True, text=True, timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2] == str(TOTAL - n)  # only the missing ones were written
    with RunStore(run_dir) as store:
        keys = [SampleKey("m", f"q{i // 100}", 0, i, "h") for i in range(TOTAL)]
        assert store.count_samples() == TOTAL
        assert store.missing_samples(keys) == []
        assert store.add_samples([SampleRecord(keys[0], "q", None, "p", "a", 1, 1, "stop")]) == 0
        con = sqlite3.connect(run_dir / "emkit.sqlite")
        distinct = con.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT model, question_id, paraphrase_index,"
            " sample_index, params_hash FROM samples)"
        ).fetchone()[0]
        con.close()
        assert distinct == TOTAL
