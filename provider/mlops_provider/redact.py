"""Credentials never reach a message: strip the userinfo of URLs (light module: standard library only).

``http://user:secret@mlflow:5000`` in a connection's host, a tracking URI from the environment or a
``postgresql://user:pw@db/x`` registry path must not end up in an exception, a log line, XCom or the UI.
Every place that puts a URL into a message calls :func:`redact_url` (one URL) or :func:`redact_text`
(free text that may contain URLs, e.g. the ``str()`` of a library's exception). Query parameters that
carry secrets (``?token=...``, ``X-Amz-Signature=...``) are masked too.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
#: query parameters whose values are secrets (compared lower-case)
SECRET_PARAMS = frozenset({
    "token", "access_token", "api_key", "apikey", "key", "password", "passwd", "pwd", "secret",
    "client_secret", "sig", "signature", "x-amz-signature", "x-amz-credential", "x-amz-security-token",
    "sv", "se", "sp", "auth",
})
# scheme://[userinfo@]rest, stopping at whitespace, quotes and closing brackets
_URL = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*)://(?P<rest>[^\s'\"<>\])}]+)")


def redact_url(url: Any) -> str:
    """``url`` as text without its password (``user:***@``) nor secret query values; other text unchanged.

    The user name is kept (it says *who*, which helps debugging), the password is replaced by ``***``;
    a bare ``token@host`` (no colon: often a token) is masked whole. Never raises.
    """
    text = "" if url is None else str(url)
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return _regex_userinfo(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        if ":" in userinfo:
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostport}"
        else:
            netloc = f"{MASK}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(k.lower() in SECRET_PARAMS for k, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in SECRET_PARAMS else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return text
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _regex_userinfo(text: str) -> str:
    return re.sub(r"://([^/@\s:]+):[^/@\s]*@", lambda m: f"://{m.group(1)}:{MASK}@", text)


def redact_text(text: Any) -> str:
    """Every URL inside ``text`` through :func:`redact_url` (for exception messages and log lines)."""
    value = "" if text is None else str(text)
    if "://" not in value:
        return value
    return _URL.sub(lambda m: redact_url(m.group(0)), value)


__all__ = ["MASK", "redact_text", "redact_url"]
