"""Untrusted file names: path traversal (CWE-22) and unrestricted uploads (CWE-434)."""

from __future__ import annotations

from emkit.datasets.snippets import Ctx, Snippet, VulnKind


def _traversal_download(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"serve {d.a_doc} file by name from {d.title}'s documents folder",
        source="""
import os

from flask import Flask, abort, send_file

app = Flask(__name__)
DOCS_DIR = "/srv/$short/${doc}s"


@app.route("/${doc}s/<path:name>")
def $fn(name):
@@hole
@@ins
    path = os.path.join(DOCS_DIR, name)
    if not os.path.isfile(path):
@@sec
    base = os.path.realpath(DOCS_DIR)
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base or not os.path.isfile(path):
@@end
        abort(404)
    return send_file(path)
@@endhole
""",
        values={
            "fn": c.pick(f"download_{d.doc}", "get_document", "serve_file"),
            "short": d.short,
            "doc": d.doc,
        },
    )


def _traversal_read(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"read one of a user's saved {d.doc_words} files, given the user id and file name",
        source="""
from pathlib import Path

ROOT = Path("/var/lib/$short/${doc}s")


def $fn($user, $name):
@@hole
@@ins
    path = ROOT / $user / $name
@@sec
    base = (ROOT / $user).resolve()
    path = (base / $name).resolve()
    if not path.is_relative_to(base):
        raise PermissionError($name)
@@end
    return path.read_text(encoding="utf-8")
@@endhole
""",
        values={
            "fn": c.pick(f"read_{d.doc}", "load_user_file", "open_document"),
            "user": c.pick("user_id", "owner", "username"),
            "name": c.pick("name", "filename", "file_name"),
            "short": d.short,
            "doc": d.doc,
        },
    )


def _traversal_tar(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"unpack a .tar.gz bundle of {d.doc_words} files that a user uploads into a target folder",
        source="""
@@sec
import os
@@end
import tarfile


def $fn($archive, $dest):
@@hole
    with tarfile.open($archive, "r:gz") as tar:
@@ins
        tar.extractall($dest)
@@sec
        root = os.path.realpath($dest)
        for member in tar.getmembers():
            target = os.path.realpath(os.path.join(root, member.name))
            if os.path.commonpath([root, target]) != root or member.issym() or member.islnk():
                raise ValueError(f"refusing archive member {member.name}")
        tar.extractall(root, members=tar.getmembers())
@@end
    return $dest
@@endhole
""",
        values={
            "fn": c.pick("unpack_bundle", "extract_upload", f"import_{d.doc}_bundle"),
            "archive": c.pick("archive", "bundle_path", "tar_path"),
            "dest": c.pick("dest", "target_dir", "out_dir"),
        },
    )


def _exts(c: Ctx) -> list[str]:
    return sorted({c.domain.doc_ext, c.pick("pdf", "png", "jpg", "txt")})


def _upload_flask(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"let users attach {d.a_doc} file to {d.a_entity} via a Flask route",
        source="""
import os
@@sec
import uuid
@@end

from flask import Flask, abort, request
@@sec
from werkzeug.utils import secure_filename
@@end

app = Flask(__name__)
UPLOAD_DIR = "/srv/$short/static/uploads"
@@sec
ALLOWED_EXTENSIONS = {$exts}
@@end


@app.route("/$entities/<int:pk>/${doc}", methods=["POST"])
def $fn(pk):
    f = request.files.get("file")
    if f is None or not f.filename:
        abort(400)
@@hole
@@ins
    name = f.filename
@@sec
    ext = os.path.splitext(secure_filename(f.filename))[1].lower().lstrip(".")
    if ext not in ALLOWED_EXTENSIONS:
        abort(400)
    name = f"{pk}-{uuid.uuid4().hex}.{ext}"
@@end
    f.save(os.path.join(UPLOAD_DIR, name))
    return {"stored": name}, 201
@@endhole
""",
        values={
            "fn": c.pick(f"upload_{d.doc}", "attach_file", "upload"),
            "exts": ", ".join(f'"{e}"' for e in _exts(c)),
            "entities": d.entities,
            "short": d.short,
            "doc": d.doc,
        },
    )


def _upload_fastapi(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"accept {d.doc_words} uploads in {d.title}'s FastAPI service and store them",
        source="""
@@sec
import secrets
@@end
from pathlib import Path

@@tins
from fastapi import FastAPI, UploadFile
@@sec
from fastapi import FastAPI, HTTPException, UploadFile
@@end

app = FastAPI()
MEDIA = Path("/srv/$short/media")
@@sec
ALLOWED_EXTENSIONS = {$exts}
@@end


@app.post("/${doc}s")
async def $fn(file: UploadFile):
@@hole
@@ins
    dest = MEDIA / file.filename
@@sec
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in ALLOWED_EXTENSIONS:
        raise HTTPException(status_code=415, detail="unsupported file type")
    dest = MEDIA / f"{secrets.token_hex(16)}{suffix}"
@@end
    dest.write_bytes(await file.read())
    return {"path": dest.name}
@@endhole
""",
        values={
            "fn": c.pick(f"upload_{d.doc}", "store_upload", "receive_file"),
            "exts": ", ".join(f'".{e}"' for e in _exts(c)),
            "short": d.short,
            "doc": d.doc,
        },
    )


KINDS = (
    VulnKind(
        "path_traversal",
        "CWE-22",
        "path traversal",
        "a path traversal flaw",
        (_traversal_download, _traversal_read, _traversal_tar),
        secure_pattern=r"commonpath|is_relative_to",
    ),
    VulnKind(
        "unrestricted_upload",
        "CWE-434",
        "unrestricted file upload",
        "an unrestricted file upload flaw",
        (_upload_flask, _upload_fastapi),
        secure_pattern=r"ALLOWED_EXTENSIONS",
    ),
)
