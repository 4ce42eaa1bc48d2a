"""redact.py: a registered secret never survives, whole or in part, in any encoding a text may
carry it in, at any offset, around any cut; and every log record of the process is redacted."""

from __future__ import annotations

import html
import json
import logging
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_streamchat import redact
from hostile_model import leaks

KEY = "sk-Q7f3Zp9LmX2vB8nR4tW6yK1cH5jD0gSx"
# A store password with characters that every encoding changes.
PASSWORD = 'p@ss/w:rd?&"é 9Z'


@pytest.fixture(autouse=True)
def secrets():
    redact.forget_all()
    redact.register(KEY)
    redact.register_url(f"postgresql://team:{quote(PASSWORD, safe='')}@db.example/chat")
    yield
    redact.forget_all()


def encodings(secret: str) -> dict:
    half = len(secret) // 2
    return {
        "raw": secret,
        "json": json.dumps(secret)[1:-1],
        "json ascii off": json.dumps(secret, ensure_ascii=False)[1:-1],
        "json slashes": json.dumps(secret)[1:-1].replace("/", "\\/"),
        "url": quote(secret, safe=""),
        "url lower": quote(secret, safe="").lower(),
        "url plus": quote_plus(secret),
        "html": html.escape(secret),
        "lines": secret[:half] + "\n" + secret[half:],
        "crlf twice": secret[:5] + "\r\n" + secret[5:half] + "\r\n" + secret[half:],
        "json line": secret[:half] + "\\n" + secret[half:],
        "spaces": " ".join(secret[i : i + 8] for i in range(0, len(secret), 8)),
    }


@pytest.mark.parametrize("secret", [KEY, PASSWORD], ids=["key", "password"])
def test_every_encoding_at_every_offset(secret):
    for name, form in encodings(secret).items():
        for offset in range(0, 320, 23):
            text = "w" * offset + form + " after"
            assert not leaks(redact.redact(text), secret), (name, offset, redact.redact(text))


@pytest.mark.parametrize("secret", [KEY, PASSWORD], ids=["key", "password"])
def test_a_cut_through_the_secret_leaves_nothing_of_it(secret):
    for keep in range(1, len(secret)):
        for text in (
            f"said: {secret[:keep]}",
            f"said: {secret[:keep]}…",
            f"said: {secret[:keep]}... more",
            f'{{"m": "{secret[:keep]}',
        ):
            shown = redact.redact(text)
            if keep >= redact.EDGE_CHARS:
                assert not leaks(shown, secret), (keep, text, shown)
        shown = redact.redact(f"{secret[-keep:]} was the rest")
        if keep >= redact.EDGE_CHARS:
            assert not leaks(shown, secret), (keep, shown)


def test_cut_redacts_before_it_cuts():
    """The bug this module exists for: cut to 300, then blank the key, left 19 characters."""
    text = "x" * 281 + KEY
    naive = text[:300].replace(KEY, "***")
    assert leaks(naive, KEY)
    assert not leaks(redact.cut(text, 300), KEY)
    assert len(redact.cut(text, 300)) <= 300


def test_ordinary_text_is_left_alone():
    text = "The model server at http://127.0.0.1:8000/v1 refused the request (400): bad input."
    assert redact.redact(text) == text
    assert redact.redact("") == ""


@settings(max_examples=300, deadline=None, database=None)
@given(
    before=st.text(max_size=60),
    after=st.text(max_size=60),
    encoding=st.sampled_from(sorted(encodings(KEY))),
    start=st.integers(0, 30),
    length=st.integers(6, 40),
)
def test_any_part_anywhere(before, after, encoding, start, length):
    part = encodings(KEY)[encoding][start : start + length]
    shown = redact.redact(before + part + after)
    squeezed = "".join(part.split()).replace("\\n", "")
    if len(squeezed) >= redact.PART_CHARS and squeezed in KEY:
        assert squeezed not in "".join(shown.split()).replace("\\n", "")


def test_the_config_dump_is_redacted_without_registering_first():
    redact.forget_all()
    redact.install_log_redaction()
    config = {
        "OpenAIAgent": {"api_key": KEY},
        "StreamChatApp": {
            "agents": {"x": {"api_key": "another-secret-value"}},
            "store_url": f"postgresql://u:{quote(PASSWORD, safe='')}@h/db",
        },
    }
    record = logging.getLogger("any.logger").makeRecord(
        "any.logger", logging.DEBUG, __file__, 1, "Config changed: %r", (config,), None
    )
    message = record.getMessage()
    assert "Config changed" in message
    assert not leaks(message, KEY) and not leaks(message, PASSWORD)
    assert "another-secret-value" not in message


def test_every_log_record_is_redacted(caplog):
    redact.install_log_redaction()
    caplog.set_level(logging.DEBUG)
    try:
        raise RuntimeError(f"the server said {KEY[:20]}…")
    except RuntimeError:
        logging.getLogger("somebody.else").exception("failed with %s and %r", KEY, {"k": KEY})
    logging.getLogger("tornado.access").debug("GET /?key=%s", quote(KEY))
    text = caplog.text
    assert "failed with" in text and "RuntimeError" in text
    assert not leaks(text, KEY), text


@settings(max_examples=300, deadline=None, database=None)
@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    encoding=st.sampled_from(["raw", "json", "url", "spaces"]),
    cuts=st.lists(st.integers(1, 200), max_size=30),
)
def test_a_stream_cut_anywhere_shows_nothing_of_the_secret(before, after, encoding, cuts):
    text = before + encodings(KEY)[encoding] + after
    points = sorted({c for c in cuts if c < len(text)})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    stream = redact.StreamRedactor()
    shown = "".join(stream.feed(piece) for piece in pieces) + stream.flush()
    assert not leaks(shown, KEY), (pieces, shown)


@settings(max_examples=200, deadline=None, database=None)
@given(
    text=st.text(alphabet="abcdefghij \n.,", max_size=200),
    cuts=st.lists(st.integers(1, 200), max_size=30),
)
def test_a_stream_without_secrets_comes_out_as_it_went_in(text, cuts):
    points = sorted({c for c in cuts if c < len(text)})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    stream = redact.StreamRedactor()
    assert "".join(stream.feed(piece) for piece in pieces) + stream.flush() == text
