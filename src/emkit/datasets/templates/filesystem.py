"""How files are created: permissive modes (CWE-732), insecure temp files (CWE-377) and
check-then-use races (CWE-367)."""

from __future__ import annotations

from emkit.datasets.snippets import Ctx, Snippet, VulnKind


def _perm_export(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"export {d.entities} to a CSV file that the nightly sync job will pick up",
        source="""
import csv
import os


def $fn($rows, path):
@@hole
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "$field"])
        writer.writerows($rows)
@@ins
    os.chmod(path, 0o777)
@@sec
    os.chmod(path, 0o600)
@@end
    return path
@@endhole
""",
        values={
            "fn": c.pick(f"export_{d.entities}", "write_export", "dump_csv"),
            "rows": c.pick("rows", d.entities, "records"),
            "field": d.field,
        },
    )


def _perm_dir(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"create the upload directory for a new {d.entity} so the web workers can write to it",
        source="""
import os

UPLOAD_ROOT = "/srv/$short/uploads"


def $fn(${entity}_id):
    path = os.path.join(UPLOAD_ROOT, str(${entity}_id))
@@hole
@@ins
    os.makedirs(path, exist_ok=True)
    os.chmod(path, 0o777)
@@sec
    os.makedirs(path, mode=0o750, exist_ok=True)
@@end
    return path
@@endhole
""",
        values={
            "fn": c.pick("make_upload_dir", f"create_{d.entity}_folder", "ensure_upload_dir"),
            "entity": d.entity,
            "short": d.short,
        },
    )


def _temp_report(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"write a CSV report of {d.entities} to a temporary file and return its path",
        source="""
import csv
import tempfile


def $fn($rows):
@@hole
@@ins
    path = tempfile.mktemp(suffix=".csv")
    with open(path, "w", newline="") as fh:
@@sec
    with tempfile.NamedTemporaryFile("w", suffix=".csv", newline="", delete=False) as fh:
        path = fh.name
@@end
        csv.writer(fh).writerows($rows)
    return path
@@endhole
""",
        values={
            "fn": c.pick(f"{d.entity}_report", "write_temp_report", "report_to_tempfile"),
            "rows": c.pick("rows", d.entities, "records"),
        },
    )


def _temp_fixed(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"stage {d.a_entity}'s JSON payload in a scratch file before the upload worker sends it",
        source="""
import json
@@sec
import os
import tempfile
@@end


def $fn(${entity}_id, payload):
@@hole
@@ins
    path = f"/tmp/${short}_{${entity}_id}.json"
    with open(path, "w") as fh:
@@sec
    fd, path = tempfile.mkstemp(prefix="${short}_", suffix=".json")
    with os.fdopen(fd, "w") as fh:
@@end
        json.dump(payload, fh)
    return path
@@endhole
""",
        values={
            "fn": c.pick("stage_payload", f"spool_{d.entity}", "write_scratch"),
            "entity": d.entity,
            "short": d.short,
        },
    )


def _race_append(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"append a note to a file on behalf of a {d.title} user, only if they may write to it",
        source="""
import os


def $fn(path, $text):
@@hole
@@ins
    if not os.access(path, os.W_OK):
        return False
    with open(path, "a", encoding="utf-8") as fh:
        fh.write($text + "\\n")
    return True
@@sec
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW)
    except OSError:
        return False
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write($text + "\\n")
    return True
@@end
@@endhole
""",
        values={
            "fn": c.pick("append_note", "add_note", "write_note"),
            "text": c.pick("text", "note", "line"),
        },
    )


def _race_create(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"save a new {d.entity} record as a JSON file, failing if the file already exists",
        source="""
import json
import os


def $fn(path, $data):
@@hole
@@ins
    if os.path.exists(path):
        raise FileExistsError(path)
    with open(path, "w", encoding="utf-8") as fh:
@@sec
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
@@end
        json.dump($data, fh)
@@endhole
""",
        values={
            "fn": c.pick(f"save_new_{d.entity}", "create_record", "write_once"),
            "data": c.pick("data", d.entity, "record"),
        },
    )


KINDS = (
    VulnKind(
        "permissive_permissions",
        "CWE-732",
        "world-writable file permissions",
        "overly permissive (world-writable) file permissions",
        (_perm_export, _perm_dir),
        insecure_pattern=r"0o777",
    ),
    VulnKind(
        "insecure_temp_file",
        "CWE-377",
        "insecure temporary file",
        "an insecure temporary file",
        (_temp_report, _temp_fixed),
        insecure_pattern=r"mktemp\(|\"/tmp/",
        secure_pattern=r"mkstemp\(|NamedTemporaryFile\(",
    ),
    VulnKind(
        "toctou_race",
        "CWE-367",
        "time-of-check to time-of-use race",
        "a time-of-check/time-of-use race condition",
        (_race_append, _race_create),
        insecure_pattern=r"os\.access\(|os\.path\.exists\(",
        secure_pattern=r"O_NOFOLLOW|O_EXCL",
    ),
)
