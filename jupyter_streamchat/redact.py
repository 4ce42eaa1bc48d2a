"""Secrets (model API keys, store passwords) kept out of every text that leaves the server.

This is the one place that knows what a secret looks like once it has travelled. Whatever holds
a secret registers it (:func:`register`); every text that leaves the process goes through
:func:`redact` first: an agent's error for the user, a REST answer, an export, and every log
record (:func:`install_log_redaction` wraps the process's log record factory, whichever logger
and handler a record goes to; :func:`protect_server_log` does it as soon as jupyter_server
looks for the extension, before the extensions are linked and their config is dumped at DEBUG;
its docstring tells the one config dump that comes earlier, and how a config file covers it).

What counts as the secret showing, beside the secret itself:

- an escaped copy of it: JSON (``\\/``, ``\\u00e9``), URL (``%40``, ``+``), HTML;
- a copy split over lines or by spaces, raw or as ``\\n`` escapes inside JSON text;
- any run of :data:`PART_CHARS` or more of its characters (a server that quotes part of a key);
- a shorter beginning of it (at least :data:`EDGE_CHARS`) where a text was cut: at the end of
  the text or before an ellipsis, and a shorter ending of it at the start of a text.

Redact *before* cutting a text to a length (:func:`cut` does both in that order): a key blanked
after the cut may have lost its end to the cut, and then it is no longer found whole.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import sys
import threading
from typing import Iterable, Optional
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "***"

# A run of this many characters of a secret is taken as part of it.
PART_CHARS = 6
# A beginning (or an ending) this long of a secret, where a text was cut, is taken as part of it.
EDGE_CHARS = 4
# Shorter secrets are not registered: every ordinary word would match a part of them.
MIN_SECRET_CHARS = 4

# What may stand between a secret's characters when a text splits it: white space, and the
# escapes of line breaks and tabs inside JSON or Python text.
_GAP = re.compile(r"\s+|(?:\\[nrt])+")
# What may follow a cut: closing quotes and brackets, punctuation, an ellipsis.
_AFTER_CUT = ".…\"'`)]}>,;:!? \t\r\n"
_ELLIPSIS = re.compile(r"\.\.\.|…")

# Config keys whose values are secrets, wherever they sit in a config (agents' settings, HTTP
# headers and environments of the programs they run too).
_SECRET_KEYS = re.compile(
    r"(?:^|[_-])(?:api[_-]?key|password|passwd|secret|token|authorization)$", re.IGNORECASE
)
# The scheme word before a credential in an Authorization header: not itself a secret.
_AUTH_SCHEME = re.compile(r"^(?:Bearer|Basic|Token)\s+", re.IGNORECASE)
# Environment variables read for secrets by this package and the clients it uses.
SECRET_ENV = ("OPENAI_API_KEY", "STREAMCHAT_STORE_URL")


class _Secret:
    """One registered secret: the forms it may take in a text, and their runs of characters."""

    def __init__(self, value: str):
        self.forms = _forms(value)
        self.parts = {
            form[i : i + PART_CHARS]
            for form in self.forms
            for i in range(len(form) - PART_CHARS + 1)
        }
        self.parts |= {form for form in self.forms if len(form) < PART_CHARS}


def _forms(value: str) -> list:
    forms = {
        value,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        json.dumps(value)[1:-1].replace("/", "\\/"),
        quote(value, safe=""),
        quote(value, safe="").lower(),
        quote_plus(value, safe=""),
        quote(value),
        html.escape(value),
    }
    # A form is looked for with white space taken out of the text, so it goes out here too.
    return sorted({_GAP.sub("", form) for form in forms} - {""}, key=len, reverse=True)


_lock = threading.Lock()
_secrets: dict = {}  # value -> _Secret


def register(value: Optional[str]) -> None:
    """Treat ``value`` as a secret from now on (a no-op for empty or very short values)."""
    if not isinstance(value, str) or len(value.strip()) < MIN_SECRET_CHARS:
        return
    with _lock:
        if value not in _secrets:
            _secrets[value] = _Secret(value)


def register_url(url: Optional[str]) -> None:
    """Register the password of a URL such as ``postgresql://user:pass@host/db``."""
    password = url_password(url)
    if password:
        register(password)
        register(unquote(password))  # as written in the URL, and as the database gets it


# ``user:password@`` after a slash, in a Postgres URL that urlsplit cannot read
# (``postgresql:/u:p@h``, a typo that libpq then quotes whole in its error).
_USERINFO = re.compile(r"^postgres(?:ql)?:/*[^\s/@:]*:([^\s/@]+)@", re.IGNORECASE)


def url_password(url: Optional[str]) -> str:
    if not isinstance(url, str) or "@" not in url:
        return ""
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    if password is None:
        match = _USERINFO.search(url)
        password = match.group(1) if match else ""
    return password


def without_password(url: str) -> str:
    """A URL as it may be shown: ``postgresql://user:***@host/db``."""
    password = url_password(url)
    if not password:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or "@" not in parts.netloc:  # one that urlsplit cannot read
        match = _USERINFO.search(url)
        return url[: match.start(1)] + MASK + url[match.end(1) :]
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{netloc[1]}").geturl()


# What a LazyConfigValue holds (its repr shows the same).
_LAZY_PARTS = ("_value", "_update", "_extend", "_prepend", "_inserts")


def register_config(config) -> None:
    """Register the secrets a traitlets config holds: values of keys named like ``api_key``,
    ``password`` or ``token`` at any depth, and the passwords of URLs anywhere in it.

    A Python config file's container methods (``c.StreamChatApp.agents.update({...})``) leave
    a ``LazyConfigValue`` in the config, whose repr in a config dump shows what it holds: it is
    walked too."""
    loader = sys.modules.get("traitlets.config.loader")  # loaded wherever such a value exists
    lazy = loader.LazyConfigValue if loader is not None else ()
    stack = [config]
    seen = 0
    while stack and seen < 100_000:  # a config is small; bound the walk all the same
        item = stack.pop()
        seen += 1
        if isinstance(item, dict):
            for key, value in item.items():
                if isinstance(value, str):
                    if isinstance(key, str) and _SECRET_KEYS.search(key):
                        register(_AUTH_SCHEME.sub("", value.strip()))
                    register_url(value)
                else:
                    stack.append(value)
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, str):
            register_url(item)
        elif lazy and isinstance(item, lazy):
            stack += [getattr(item, name, None) for name in _LAZY_PARTS]


def register_environment(environ=os.environ) -> None:
    register(environ.get("OPENAI_API_KEY"))
    register_url(environ.get("STREAMCHAT_STORE_URL"))


def forget_all() -> None:
    """For tests: no secrets registered."""
    with _lock:
        _secrets.clear()


# -- redacting ----------------------------------------------------------------------------


def redact(text: str) -> str:
    """``text`` with every registered secret, whole or in part, replaced by :data:`MASK`."""
    return _redact(text, edges=True)


def _redact(text: str, edges: bool) -> str:
    if not _secrets or not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    spans = _spans(text, edges)
    return _mask(text, spans) if spans else text


def _spans(text: str, edges: bool) -> list:
    """Where the secrets are in ``text``: sorted, merged ``[start, end)`` spans."""
    spans: list = []
    # The text with the gaps that may split a secret taken out; positions found in it are
    # mapped back to the text's own.
    squeezed = _Squeezed(text)
    for secret in list(_secrets.values()):
        spans += _parts_found(squeezed, secret)
        if edges:
            spans += _cut_edges(squeezed, secret)
    merged: list = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


class StreamRedactor:
    """Redacts a text that arrives in pieces (a model's reply): a secret may be split across
    two pieces, so what ends a piece and may go on in the next is held back until the next
    piece shows how far it goes: a run of a secret's characters reaching the end (at most as
    long as the secret's longest form), or else up to PART_CHARS - 1 characters that occur in a
    secret. :meth:`flush` gives what is held at the end.
    """

    def __init__(self):
        self.held = ""
        self._masked = False  # what was given last ended with MASK

    def feed(self, text: str) -> str:
        if not _secrets:
            text, self.held = self.held + text, ""
            return text
        text = self.held + text
        spans = _spans(text, edges=False)
        if spans and spans[-1][1] >= len(text):  # a secret's run may go on in the next piece
            cut = spans.pop()[0]
        else:
            cut = len(text) - _tail_of_a_secret(text)
        self.held = text[cut:]
        return self._given(_mask(text[:cut], spans) if spans else text[:cut])

    def flush(self) -> str:
        text, self.held = self.held, ""
        return self._given(redact(text))

    def _given(self, text: str) -> str:
        # A secret found across two pieces is masked in both: one MASK shows for it.
        while self._masked and text.startswith(MASK):
            text = text[len(MASK) :]
        if text:
            self._masked = text.endswith(MASK)
        return text


def _tail_of_a_secret(text: str) -> int:
    """Length of the longest end of ``text``, shorter than PART_CHARS, that is inside a form
    of a registered secret."""
    for size in range(min(PART_CHARS - 1, len(text)), 0, -1):
        tail = text[-size:]
        if any(tail in form for secret in list(_secrets.values()) for form in secret.forms):
            return size
    return 0


def cut(text: str, limit: int, end: str = "…") -> str:
    """``text`` redacted, then cut to at most ``limit`` characters (ending in ``end``)."""
    text = redact(text)
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(end))] + end


class _Squeezed:
    """A text without the gaps that may split a secret (``.text``), and the way back from a
    span of it to the span of the original text that it came from (``.span``)."""

    def __init__(self, text: str):
        self.original = text
        self.text = _GAP.sub("", text)
        self._where = None  # index in original of each kept character, made when first needed

    def span(self, start: int, end: int) -> tuple:
        if len(self.text) == len(self.original):
            return start, end
        if self._where is None:
            where, at = [], 0
            for gap in _GAP.finditer(self.original):
                where.extend(range(at, gap.start()))
                at = gap.end()
            where.extend(range(at, len(self.original)))
            self._where = where
        return self._where[start], self._where[end - 1] + 1


def _parts_found(squeezed: _Squeezed, secret: _Secret) -> list:
    # Cheap first: a run of a secret's characters must contain one of its parts, and a
    # substring test is done in C. Only a text that holds one is scanned position by position.
    text = squeezed.text
    if not any(part in text for part in secret.parts):
        return []
    spans, i, n = [], 0, len(text)
    while i < n:
        if text[i : i + PART_CHARS] in secret.parts or any(
            text.startswith(form, i) for form in secret.forms if len(form) < PART_CHARS
        ):
            j = i + PART_CHARS
            while j < n and any(text[i : j + 1] in form for form in secret.forms):
                j += 1
            j = min(j, n)
            spans.append(squeezed.span(i, j))
            i = j
        else:
            i += 1
    return spans


def _cut_edges(squeezed: _Squeezed, secret: _Secret) -> list:
    """A beginning of the secret where the text was cut (its end, or before an ellipsis), and
    an ending of it at the text's start."""
    text, spans = squeezed.text, []
    ends = [len(text.rstrip(_AFTER_CUT))]
    ends += [m.start() for m in _ELLIPSIS.finditer(text)]
    start = len(text) - len(text.lstrip(_AFTER_CUT))
    for form in secret.forms:
        longest = len(form) - 1
        for end in ends:
            for size in range(min(longest, end), EDGE_CHARS - 1, -1):
                if text.startswith(form[:size], end - size):
                    spans.append(squeezed.span(end - size, end))
                    break
        for size in range(min(longest, len(text) - start), EDGE_CHARS - 1, -1):
            if text.startswith(form[-size:], start):
                spans.append(squeezed.span(start, start + size))
                break
    return spans


def _mask(text: str, spans: Iterable) -> str:
    """``text`` with each of ``spans`` (sorted, merged) replaced by MASK."""
    out, at = [], 0
    for start, end in spans:
        out.append(text[at:start])
        out.append(MASK)
        at = end
    out.append(text[at:])
    return "".join(out)


# -- logging ------------------------------------------------------------------------------


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """Redact a log record in place: its message with its arguments, and its traceback."""
    if getattr(record, "_streamchat_redacted", False):
        return record
    for arg in _args_of(record):
        if isinstance(arg, dict):  # a config dump ("Config changed: %r")
            register_config(arg)
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # a broken format: leave it to the handler to report
        return record
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text = redact(text)
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._streamchat_redacted = True
    return record


def _args_of(record: logging.LogRecord) -> tuple:
    args = record.args
    if isinstance(args, dict):
        return (args,)
    return tuple(args or ())


def install_log_redaction() -> None:
    """Redact every log record this process makes, whichever logger and handler it goes to."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_streamchat", False):
        return

    def factory(*args, **kwargs):
        return redact_record(previous(*args, **kwargs))

    factory._streamchat = True
    logging.setLogRecordFactory(factory)


def protect_server_log() -> None:
    """Redact the log of the Jupyter server this process runs, from now on: called when
    jupyter_server first looks for the extension, before any extension is linked (linking
    logs the whole config at DEBUG, API keys included).

    One dump comes earlier, and no extension code has run by then: traitlets logs the merged
    config ("Config changed: ...") at DEBUG once it has read the config files, before
    jupyter_server looks for extensions, if a Python config file used a container method
    (``c.StreamChatApp.agents.update(...)``, ``.append(...)``), whose value never equals its
    copy. A Python config file itself runs before that dump, so such a file begins with::

        from jupyter_streamchat.redact import protect_server_log; protect_server_log()

    (A config of plain assignments, JSON config files and the environment need nothing.)
    """
    install_log_redaction()
    register_environment()
    serverapp = sys.modules.get("jupyter_server.serverapp")
    if serverapp is not None and serverapp.ServerApp.initialized():
        register_config(serverapp.ServerApp.instance().config)
