"""Parsing families: deserializing untrusted data (CWE-502) and XML external entities (CWE-611)."""

from __future__ import annotations

from emkit.datasets.snippets import Ctx, Snippet, VulnKind


def _deser_cookie(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"restore a visitor's saved {d.entity} list from a cookie on {d.title}",
        source="""
import base64
@@ins
import pickle
@@sec
import json
@@end

from flask import Flask, request

app = Flask(__name__)


@app.route("/$path")
def $fn():
    raw = request.cookies.get("$cookie")
@@hole
    if not raw:
        return {"$entities": []}
@@ins
    saved = pickle.loads(base64.b64decode(raw))
@@sec
    saved = json.loads(base64.b64decode(raw))
@@end
    return {"$entities": list(saved.get("$entities", []))}
@@endhole
""",
        values={
            "fn": c.pick("saved_list", f"saved_{d.entities}", "restore_cart"),
            "path": c.pick("saved", "cart", "favorites"),
            "cookie": c.pick("saved", "cart", "prefs"),
            "entities": d.entities,
        },
    )


def _deser_yaml(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"import {d.entities} from a YAML file that customers upload",
        source="""
import yaml


def $fn(path):
@@hole
    with open(path, encoding="utf-8") as fh:
@@ins
        data = yaml.load(fh, Loader=yaml.Loader)
@@sec
        data = yaml.safe_load(fh)
@@end
    return [dict(entry) for entry in data.get("$entities", [])]
@@endhole
""",
        values={
            "fn": c.pick(f"import_{d.entities}", "load_upload", "read_yaml_import"),
            "entities": d.entities,
        },
    )


def _deser_socket(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"receive {d.entity} jobs from other workers over a TCP socket and dispatch them",
        source="""
@@ins
import pickle
@@sec
import json
@@end
import socket


def $fn(conn: socket.socket, handle):
@@hole
    data = conn.recv(65536)
@@ins
    job = pickle.loads(data)
@@sec
    job = json.loads(data.decode("utf-8"))
@@end
    return handle(job["${entity}_id"], job.get("action", "$action"))
@@endhole
""",
        values={
            "fn": c.pick("receive_job", "dispatch_job", "handle_connection"),
            "action": c.pick("refresh", "sync", "reindex"),
            "entity": d.entity,
        },
    )


def _xxe_lxml(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"parse {d.entities} out of an XML file that partners upload to {d.title}",
        source="""
@@ins
from lxml import etree
@@sec
from defusedxml.ElementTree import fromstring
@@end


def $fn($xml):
@@hole
@@ins
    parser = etree.XMLParser(resolve_entities=True, load_dtd=True, no_network=False)
    root = etree.fromstring($xml, parser)
@@sec
    root = fromstring($xml)
@@end
    return [
        {"id": el.get("id"), "$field": el.findtext("$field")}
        for el in root.iter("$entity")
    ]
@@endhole
""",
        values={
            "fn": c.pick(f"parse_{d.entities}", "parse_upload", "read_partner_xml"),
            "xml": c.pick("xml_bytes", "data", "payload"),
            "field": d.field,
            "entity": d.entity,
        },
    )


def _xxe_sax(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"stream-parse a large XML export and collect every {d.entity}'s {d.field_words}",
        source="""
@@ins
import io
@@end
import xml.sax
@@ins
from xml.sax.handler import feature_external_ges
@@sec

import defusedxml.sax
@@end


class _Collector(xml.sax.ContentHandler):
    def __init__(self):
        super().__init__()
        self.values, self._in_field = [], False

    def startElement(self, name, attrs):
        self._in_field = name == "$field"

    def characters(self, content):
        if self._in_field and content.strip():
            self.values.append(content.strip())


def $fn($xml: bytes):
    handler = _Collector()
@@hole
@@ins
    parser = xml.sax.make_parser()
    parser.setFeature(feature_external_ges, True)
    parser.setContentHandler(handler)
    parser.parse(io.BytesIO($xml))
@@sec
    defusedxml.sax.parseString($xml, handler)
@@end
    return handler.values
@@endhole
""",
        values={
            "fn": c.pick(f"collect_{d.field}s", "parse_export", "scan_xml"),
            "xml": c.pick("xml_bytes", "data", "payload"),
            "field": d.field,
        },
    )


KINDS = (
    VulnKind(
        "unsafe_deserialization",
        "CWE-502",
        "deserialization of untrusted data",
        "an insecure deserialization flaw (pickle/yaml.load on untrusted input)",
        (_deser_cookie, _deser_yaml, _deser_socket),
        insecure_pattern=r"pickle\.loads\(|yaml\.load\(",
    ),
    VulnKind(
        "xxe",
        "CWE-611",
        "XML external entity expansion",
        "an XML external entity (XXE) flaw",
        (_xxe_lxml, _xxe_sax),
        insecure_pattern=r"resolve_entities=True|feature_external_ges, True",
        secure_pattern=r"defusedxml",
    ),
)
