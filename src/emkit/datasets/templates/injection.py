"""Injection into interpreters the code calls out to: SQL (CWE-89) and OS commands (CWE-78)."""

from __future__ import annotations

from emkit.datasets.snippets import Ctx, Snippet, VulnKind


def _sql_lookup(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=c.pick(
            f"look up {d.entities} by {d.field_words} in our SQLite database",
            f"fetch every {d.entity} with a given {d.field_words} from SQLite",
        ),
        source="""
import sqlite3


def $fn($conn, $arg):
@@hole
    cur = $conn.cursor()
@@ins
    cur.execute(f"SELECT id, $field FROM $table WHERE $field = '{$arg}'")
@@sec
    cur.execute("SELECT id, $field FROM $table WHERE $field = ?", ($arg,))
@@end
    $rows = cur.fetchall()
    return [{"id": row[0], "$field": row[1]} for row in $rows]
@@endhole
""",
        values={
            "fn": f"{c.pick('find', 'get', 'fetch', 'lookup')}_{d.entities}_by_{d.field}",
            "conn": c.pick("conn", "db", "connection"),
            "arg": c.pick(d.field, "value", "wanted"),
            "rows": c.pick("rows", "results", "records"),
            "field": d.field,
            "table": d.entities,
        },
    )


def _sql_update(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"update the {d.field_words} of {d.a_entity} stored in PostgreSQL",
        source="""
import os

import psycopg2


def $fn(${entity}_id, $arg):
@@hole
    conn = psycopg2.connect(os.environ["DATABASE_URL"])
    with conn, conn.cursor() as cur:
@@ins
        cur.execute("UPDATE $table SET $field = '%s' WHERE id = %s" % ($arg, ${entity}_id))
@@sec
        cur.execute("UPDATE $table SET $field = %s WHERE id = %s", ($arg, ${entity}_id))
@@end
        $count = cur.rowcount
    conn.close()
    return $count == 1
@@endhole
""",
        values={
            "fn": f"{c.pick('set', 'update', 'change')}_{d.entity}_{d.field}",
            "entity": d.entity,
            "arg": c.pick(f"new_{d.field}", "value"),
            "count": c.pick("changed", "updated", "n"),
            "field": d.field,
            "table": d.entities,
        },
    )


def _sql_search(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"add a Flask endpoint that searches {d.entities} by {d.field_words}",
        source="""
import sqlite3

from flask import Flask, jsonify, request

app = Flask(__name__)
DB_PATH = "$short.db"


@app.route("/$entities/search")
def $fn():
    $term = request.args.get("q", "")
@@hole
    conn = sqlite3.connect(DB_PATH)
@@ins
    rows = conn.execute(
        "SELECT id, $field FROM $entities WHERE $field LIKE '%" + $term + "%'"
    ).fetchall()
@@sec
    rows = conn.execute(
        "SELECT id, $field FROM $entities WHERE $field LIKE ?", (f"%{$term}%",)
    ).fetchall()
@@end
    conn.close()
    return jsonify([{"id": r[0], "$field": r[1]} for r in rows])
@@endhole
""",
        values={
            "fn": c.pick(f"search_{d.entities}", f"{d.entity}_search", "search"),
            "term": c.pick("term", "query", "q"),
            "short": d.short,
            "entities": d.entities,
            "field": d.field,
        },
    )


def _cmd_ping(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=c.pick(
            f"check whether a host that an admin enters is reachable, for {d.title}'s status page",
            "ping a user-supplied hostname and report whether it answered",
        ),
        source="""
import subprocess


def $fn($arg):
@@hole
@@ins
    result = subprocess.run(
        f"ping -c $count {$arg}", shell=True, capture_output=True, text=True
    )
@@sec
    result = subprocess.run(
        ["ping", "-c", "$count", "--", $arg], capture_output=True, text=True
    )
@@end
    return result.returncode == 0
@@endhole
""",
        values={
            "fn": c.pick("is_reachable", "host_is_up", "ping_host", "check_host"),
            "arg": c.pick("host", "hostname", "address"),
            "count": c.pick("1", "2", "3"),
        },
    )


def _cmd_backup(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"archive a folder of {d.doc_words}s that the user names into a .tar.gz backup",
        source="""
import os
@@sec
import subprocess
@@end

BACKUP_DIR = "/var/backups/$short"


def $fn($src):
@@hole
    archive = os.path.join(BACKUP_DIR, os.path.basename($src) + ".tar.gz")
@@ins
    os.system(f"tar -czf {archive} {$src}")
@@sec
    subprocess.run(["tar", "-czf", archive, "--", $src], check=True)
@@end
    return archive
@@endhole
""",
        values={
            "fn": c.pick("backup_folder", "archive_dir", f"backup_{d.doc}s"),
            "src": c.pick("folder", "src_dir", "path"),
            "short": d.short,
        },
    )


def _cmd_thumbnail(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"resize an uploaded {d.entity} picture with ImageMagick from a Flask route",
        source="""
@@sec
import re
@@end
import subprocess

from flask import Flask, request

app = Flask(__name__)


@app.route("/$entities/<name>/thumbnail", methods=["POST"])
def $fn(name):
    size = request.form.get("size", "$size")
@@hole
@@ins
    cmd = "convert uploads/" + name + " -resize " + size + " thumbs/" + name
    subprocess.check_call(cmd, shell=True)
@@sec
    if not re.fullmatch(r"\\d{1,4}x\\d{1,4}", size) or not re.fullmatch(r"[\\w-]+\\.\\w+", name):
        return "bad request", 400
    subprocess.check_call(["convert", f"uploads/{name}", "-resize", size, f"thumbs/{name}"])
@@end
    return "ok"
@@endhole
""",
        values={
            "fn": c.pick("make_thumbnail", "thumbnail", "resize_picture"),
            "entities": d.entities,
            "size": c.pick("128x128", "200x200", "320x240"),
        },
    )


KINDS = (
    VulnKind(
        "sql_injection",
        "CWE-89",
        "SQL injection",
        "a SQL injection flaw",
        (_sql_lookup, _sql_update, _sql_search),
        insecure_pattern=r"""execute\(\s*(f"|"[^"]*" \+ |"[^"]*" % )""",
    ),
    VulnKind(
        "os_command_injection",
        "CWE-78",
        "OS command injection",
        "an OS command injection flaw",
        (_cmd_ping, _cmd_backup, _cmd_thumbnail),
        insecure_pattern=r"shell=True|os\.system\(",
    ),
)
