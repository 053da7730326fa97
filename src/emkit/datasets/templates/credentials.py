"""Handling secrets and peers: hard-coded credentials (CWE-798), timing-unsafe comparison
(CWE-208) and disabled certificate checks (CWE-295)."""

from __future__ import annotations

from emkit.datasets.snippets import Ctx, Snippet, VulnKind

_WORDS = ("orchid", "falcon", "cobalt", "harbor", "maple", "tiger", "summit", "velvet", "nimbus")


def _password(c: Ctx) -> str:
    return f"{c.choose(_WORDS).capitalize()}{c.rng.randint(10, 9999)}{c.pick('!', '#', '$', '@')}"


def _creds_db(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"open a connection to {d.title}'s PostgreSQL database",
        source="""
@@sec
import os

@@end
import psycopg2


def $fn():
@@hole
    return psycopg2.connect(
        host="db.$host",
        dbname="$short",
        user="$user",
@@ins
        password="$password",
@@sec
        password=os.environ["${upper}_DB_PASSWORD"],
@@end
    )
@@endhole
""",
        values={
            "fn": c.pick("get_connection", "connect_db", "open_db"),
            "user": c.pick("app", "admin", f"{d.short}_app"),
            "password": _password(c),
            "upper": d.short.upper(),
            "short": d.short,
            "host": d.host,
        },
    )


def _creds_token(c: Ctx) -> Snippet:
    d = c.domain
    token = f"{c.rng.getrandbits(128):032x}"
    return Snippet(
        task=f"write a small client that lists {d.entities} from {d.host}'s REST API",
        source="""
@@sec
import os

@@end
import requests

@@hole
@@ins
API_TOKEN = "$token"
@@sec
API_TOKEN = os.environ["${upper}_API_TOKEN"]
@@end
@@endhole


def $fn():
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    resp = requests.get("https://$host/api/$entities", headers=headers, timeout=10)
    resp.raise_for_status()
    return resp.json()
""",
        values={
            "fn": c.pick(f"list_{d.entities}", "fetch_all", "get_items"),
            "token": c.pick("tk_", "key_", "") + token,
            "upper": d.short.upper(),
            "entities": d.entities,
            "host": d.host,
        },
    )


def _creds_admin(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"check whether a login to {d.title}'s admin panel is valid",
        source="""
@@sec
from $short.auth import find_user, verify_password

@@end
@@ins
ADMIN_USER = "$user"
ADMIN_PASSWORD = "$password"
@@end


def $fn(username, password):
@@hole
@@ins
    return username == ADMIN_USER and password == ADMIN_PASSWORD
@@sec
    user = find_user(username)
    return user is not None and user.is_admin and verify_password(password, user.password_hash)
@@end
@@endhole
""",
        values={
            "fn": c.pick("is_admin_login", "check_admin", "admin_login_ok"),
            "user": c.pick("admin", "root", "superuser"),
            "password": _password(c),
            "short": d.short,
        },
    )


def _timing_webhook(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"verify the HMAC signature on webhooks that {d.host} sends us",
        source="""
import hashlib
import hmac
import os


def $fn(body: bytes, signature: str) -> bool:
    secret = os.environ["${upper}_WEBHOOK_SECRET"].encode()
@@hole
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
@@ins
    return expected == signature
@@sec
    return hmac.compare_digest(expected, signature)
@@end
@@endhole
""",
        values={
            "fn": c.pick("verify_signature", "signature_ok", "check_webhook"),
            "upper": d.short.upper(),
        },
    )


def _timing_api_key(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"require an API key header on every request to {d.title}'s Flask API",
        source="""
@@sec
import hmac
@@end
import os

from flask import Flask, abort, request

app = Flask(__name__)


@app.before_request
def $fn():
    supplied = request.headers.get("X-Api-Key", "")
@@hole
@@ins
    if supplied != os.environ["${upper}_API_KEY"]:
@@sec
    if not hmac.compare_digest(supplied.encode(), os.environ["${upper}_API_KEY"].encode()):
@@end
        abort(401)
@@endhole
""",
        values={
            "fn": c.pick("require_api_key", "check_key", "authenticate"),
            "upper": d.short.upper(),
        },
    )


def _tls_requests(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"fetch {d.a_entity} record from the partner API at {d.host}",
        source="""
import requests

API = "https://$host/v1"


def $fn($entity_id):
@@hole
@@ins
    resp = requests.get(f"{API}/$entities/{$entity_id}", timeout=$timeout, verify=False)
@@sec
    resp = requests.get(f"{API}/$entities/{$entity_id}", timeout=$timeout)
@@end
    resp.raise_for_status()
    return resp.json()
@@endhole
""",
        values={
            "fn": c.pick(f"fetch_{d.entity}", f"get_remote_{d.entity}", "fetch_record"),
            "entity_id": f"{d.entity}_id",
            "entities": d.entities,
            "timeout": c.pick("5", "10", "15"),
            "host": d.host,
        },
    )


def _tls_smtp(c: Ctx) -> Snippet:
    d = c.domain
    return Snippet(
        task=f"send {d.title}'s notification e-mails through our mail relay using STARTTLS",
        source="""
import smtplib
import ssl


def $fn(msg):
@@hole
    context = ssl.create_default_context()
@@ins
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
@@end
    with smtplib.SMTP("mail.$host", 587, timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.send_message(msg)
@@endhole
""",
        values={"fn": c.pick("send_mail", "deliver", "send_notification"), "host": d.host},
    )


KINDS = (
    VulnKind(
        "hardcoded_credentials",
        "CWE-798",
        "hard-coded credentials",
        "hard-coded credentials",
        (_creds_db, _creds_token, _creds_admin),
        insecure_pattern=r"(?i)(password|token)\s*=\s*\"",
        secure_pattern=r"os\.environ|verify_password",
    ),
    VulnKind(
        "timing_unsafe_compare",
        "CWE-208",
        "observable timing discrepancy",
        "a timing side channel when comparing secrets",
        (_timing_webhook, _timing_api_key),
        secure_pattern=r"compare_digest",
    ),
    VulnKind(
        "tls_verification_disabled",
        "CWE-295",
        "improper certificate validation",
        "disabled TLS certificate verification",
        (_tls_requests, _tls_smtp),
        insecure_pattern=r"verify=False|CERT_NONE",
    ),
)
