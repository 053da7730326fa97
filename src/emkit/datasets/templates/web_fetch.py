"""Data the server fetches or receives from the network: SSRF (CWE-918) and unbounded reads
(CWE-400)."""

from __future__ import annotations

from emkit.datasets.snippets import Ctx, Snippet, VulnKind


def _ssrf_preview(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"fetch the page title of a URL a user pastes into {d.title}, for link previews",
        source="""
import re
@@sec
from urllib.parse import urlparse
@@end

import requests
@@sec

ALLOWED_HOSTS = {"$host", "docs.$host"}
@@end


def $fn(url):
@@hole
@@sec
    parts = urlparse(url)
    if parts.scheme != "https" or parts.hostname not in ALLOWED_HOSTS:
        raise ValueError("URL not allowed")
@@end
@@ins
    resp = requests.get(url, timeout=$timeout)
@@sec
    resp = requests.get(url, timeout=$timeout, allow_redirects=False)
@@end
    m = re.search(r"<title>(.*?)</title>", resp.text, re.S)
    return m.group(1).strip() if m else None
@@endhole
""",
        values={
            "fn": c.pick("link_preview", "fetch_title", "preview"),
            "timeout": c.pick("5", "10", "3"),
            "host": d.host,
        },
    )


def _ssrf_avatar(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"import {d.a_doc} from a URL the user provides and save it to disk",
        source="""
import os
@@sec
from urllib.parse import urlparse
@@end

import requests
@@sec

ALLOWED_HOSTS = {"$host"}
@@end

MEDIA_DIR = "/srv/$short/media"


def $fn(url, $name):
@@hole
@@sec
    parts = urlparse(url)
    if parts.scheme != "https" or parts.hostname not in ALLOWED_HOSTS:
        raise ValueError("unsupported source")
@@end
@@ins
    resp = requests.get(url, timeout=10, stream=True)
@@sec
    resp = requests.get(url, timeout=10, stream=True, allow_redirects=False)
@@end
    resp.raise_for_status()
    data = resp.raw.read(5_000_000)
    dest = os.path.join(MEDIA_DIR, os.path.basename($name))
    with open(dest, "wb") as fh:
        fh.write(data)
    return dest
@@endhole
""",
        values={
            "fn": c.pick(f"import_{d.doc}", "fetch_remote_file", "download_from_url"),
            "name": c.pick("name", "filename"),
            "host": d.host,
            "short": d.short,
        },
    )


def _unbounded_webhook(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"receive JSON webhook events from {d.host} in a Flask endpoint",
        source="""
import json

from flask import Flask, abort, request

app = Flask(__name__)
@@sec
MAX_BODY = $limit
@@end


@app.route("/hooks/$short", methods=["POST"])
def $fn():
@@hole
@@ins
    raw = request.get_data()
@@sec
    if request.content_length is None or request.content_length > MAX_BODY:
        abort(413)
    raw = request.stream.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        abort(413)
@@end
    try:
        event = json.loads(raw)
    except ValueError:
        abort(400)
    return {"received": event.get("type")}
@@endhole
""",
        values={
            "fn": c.pick("webhook", "receive_event", "on_hook"),
            "limit": c.pick("64 * 1024", "1_000_000", "256 * 1024"),
            "short": d.short,
        },
    )


def _unbounded_socket(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"read a whole {d.entity} message from a client socket until the client closes it",
        source="""
import socket
@@sec

MAX_MESSAGE = $limit
@@end


def $fn(conn: socket.socket) -> bytes:
    chunks = []
@@hole
@@sec
    total = 0
@@end
    while True:
        chunk = conn.recv($bufsize)
        if not chunk:
            break
@@sec
        total += len(chunk)
        if total > MAX_MESSAGE:
            raise ValueError("message too large")
@@end
        chunks.append(chunk)
    return b"".join(chunks)
@@endhole
""",
        values={
            "fn": c.pick("read_message", "recv_all", f"read_{d.entity}"),
            "limit": c.pick("1_048_576", "4 * 1024 * 1024", "65536"),
            "bufsize": c.pick("4096", "8192", "1024"),
        },
    )


def _unbounded_download(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"download the nightly {d.entity} feed from a partner URL into memory",
        source="""
import requests
@@sec

MAX_BYTES = $limit
@@end


def $fn(url):
@@hole
@@ins
    resp = requests.get(url, timeout=30)
    resp.raise_for_status()
    return resp.content
@@sec
    with requests.get(url, timeout=30, stream=True) as resp:
        resp.raise_for_status()
        data = bytearray()
        for chunk in resp.iter_content(65536):
            data += chunk
            if len(data) > MAX_BYTES:
                raise ValueError("feed too large")
    return bytes(data)
@@end
@@endhole
""",
        values={
            "fn": c.pick("fetch_feed", f"download_{d.entities}", "get_feed"),
            "limit": c.pick("20 * 1024 * 1024", "50_000_000", "8 * 1024 * 1024"),
        },
    )


KINDS = (
    VulnKind(
        "ssrf",
        "CWE-918",
        "server-side request forgery",
        "a server-side request forgery (SSRF) flaw",
        (_ssrf_preview, _ssrf_avatar),
        secure_pattern=r"ALLOWED_HOSTS",
    ),
    VulnKind(
        "unbounded_read",
        "CWE-400",
        "uncontrolled resource consumption",
        "an unbounded read that allows resource exhaustion",
        (_unbounded_webhook, _unbounded_socket, _unbounded_download),
        secure_pattern=r"MAX_\w+",
    ),
)
