"""No store password and no model API key leaves a real ``jupyter server --debug``: not its log
(the config dumps of traitlets and jupyter_server at DEBUG, psycopg's own loggers, tracebacks,
the shutdown), not an ``ERROR`` frame or a reply's error, not a REST answer, not an export.

Each secret is looked for whole and as any run of 6 of its characters (``hostile_model.leaks``),
in its raw and its URL-escaped form, in everything the server said.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from traitlets.config import Config

from faultfs import WireClient
from hostile_model import HostileModel, Script, delta, event, leaks
from server_process import JupyterServer, free_port, isolated_env

from jupyter_streamchat import redact
from jupyter_streamchat.redact import MASK

# Random-looking, with no English word in them: any run of their characters in a text is a leak.
KEY = "sk-Vq8Rw3Lz6Nb1Tx5Pc9Hm2Jd7Kf4Gs0Yu"  # c.OpenAIAgent.api_key
NAMED_KEY = "sk-Zc4Xn8Bm1Vq5Lk9Jh3Gf7Dw2Sa6Pe0Ry"  # a named agent's own api_key
ENV_KEY = "sk-Ue5Wi9Oq2Rt6Yp0As4Df8Gh3Jk7Lz1Xc"  # $OPENAI_API_KEY
# A store password with characters that a URL must escape.
PASSWORD = "Pw7@Qx/3:Zk9#Lm5%Rb"

FRAME_GUARD = 200  # frames read while waiting for one answer; a hang guard only
REQUEST_GUARD = 60.0  # seconds for one answer of a server whose store cannot be reached

# The config dump at DEBUG that traitlets makes for every app whose config changes.
CONFIG_DUMP = "Config changed: "


def found(texts: dict, secrets: list) -> dict:
    """{where: the parts of a secret found there} over every text and every secret."""
    return {
        where: parts
        for where, text in texts.items()
        for secret in secrets
        if (parts := leaks(text, secret))
    }


def leaking_lines(log: str, secrets: list) -> list:
    """The log lines that show a secret, with the secret masked (for the failure message)."""
    lines = [line for line in log.splitlines() if any(leaks(line, s) for s in secrets)]
    for secret in secrets:
        lines = [line.replace(secret, "<secret>") for line in lines]
    return [line[:300] for line in lines[:5]]


def answer(server: JupyterServer, frame: dict, until) -> list:
    """Send ``frame`` on a fresh socket; read frames until ``until(frame)`` -> the frames."""
    client = WireClient.to(server, timeout=REQUEST_GUARD)
    try:
        client.send(frame)
        frames = []
        for _ in range(FRAME_GUARD):
            frames.append(client.recv())
            if until(frames[-1]):
                return frames
        raise AssertionError(f"no answer in {FRAME_GUARD} frames: {frames[-3:]}")
    finally:
        client.close()


def send_message(agent: str, conversation: str) -> dict:
    return {
        "type": "SEND_MESSAGE",
        "conversationId": conversation,
        "agentId": agent,
        "text": "hello",
        "clientMessageId": uuid.uuid4().hex,
    }


def rest(server: JupyterServer, path: str) -> tuple:
    status, _, body = server.request("GET", path, timeout=REQUEST_GUARD)
    return status, body.decode("utf-8", "replace")


def config_file(server: JupyterServer) -> Path:
    return Path(server.env["JUPYTER_CONFIG_DIR"]) / "jupyter_server_config.py"


# -- what the log of any process shows ------------------------------------------------------


@pytest.fixture
def nothing_registered():
    redact.forget_all()
    yield
    redact.forget_all()


def test_a_config_dump_shows_no_secret_of_a_python_config_file(nothing_registered):
    """What a Python config file makes: container methods leave LazyConfigValues in the dump;
    HTTP headers and programs' environments carry credentials under their own names."""
    token = "ghp-Mn3Bv7Cx1Zl5Kj9Hg2Fd6Sa0Qw4Er8Ty"
    c = Config()
    c.OpenAIAgent.api_key = KEY
    c.StreamChatApp.agents.update({"gpt": {"class": "openai", "api_key": NAMED_KEY}})
    c.StreamChatApp.store_url = f"postgresql://chat:{quote(PASSWORD, safe='')}@db/chat"
    c.OpenAIAgent.mcp_servers = {
        "web": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": f"Bearer {ENV_KEY}"}},
        "gh": {"command": ["gh-mcp"], "env": {"GITHUB_TOKEN": token}},
    }
    redact.install_log_redaction()
    record = logging.getLogger("ServerApp").makeRecord(
        "ServerApp", logging.DEBUG, __file__, 1, CONFIG_DUMP + "%r", (c,), None
    )
    message = record.getMessage()
    assert "LazyConfigValue" in message and f"'Bearer {MASK}'" in message
    assert not found({"dump": message}, [KEY, NAMED_KEY, ENV_KEY, token, PASSWORD]), message


def test_a_postgres_url_that_libpq_quotes_whole_shows_no_password(nothing_registered):
    """A URL that urlsplit cannot read (a slash missing) still has its password registered:
    libpq says such a URL back whole in its error."""
    url = f"postgresql:/chat:{quote(PASSWORD, safe='')}@db/chat"
    redact.register_url(url)
    said = f'missing "=" after "{url}" in connection info string'
    assert not leaks(redact.redact(said), quote(PASSWORD, safe=""))
    assert redact.without_password(url) == f"postgresql:/chat:{MASK}@db/chat"


# -- a Postgres store that cannot be reached ------------------------------------------------


@pytest.mark.subprocess
def test_an_unreachable_postgres_store_shows_its_password_and_the_keys_nowhere(tmp_path):
    """``jupyter server --debug`` (with the other installed extensions, as ``jupyter lab
    --debug`` runs) whose config holds the model keys and a ``postgresql://`` store URL with a
    password, at a port where nothing listens; psycopg's own loggers at DEBUG too."""
    pytest.importorskip("jupyter_streamchat.store.postgres")  # needs psycopg and psycopg_pool
    store_url = f"postgresql://chat:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/chat"
    secrets = [KEY, NAMED_KEY, ENV_KEY, PASSWORD, quote(PASSWORD, safe="")]
    env = isolated_env(tmp_path, OPENAI_API_KEY=ENV_KEY)
    server = JupyterServer(tmp_path, "--debug", env=env, other_extensions=True)
    config_file(server).write_text(
        "\n".join(
            [
                f"c.OpenAIAgent.api_key = {KEY!r}",
                "c.OpenAIAgent.base_url = 'http://127.0.0.1:9/v1'",
                f"c.StreamChatApp.store_url = {store_url!r}",
                "c.StreamChatApp.agents = "
                + repr({"gpt": {"class": "openai", "api_key": NAMED_KEY, "model": "m"}}),
                # What someone who debugs the store turns on: psycopg's loggers to the console.
                "c.ServerApp.logging_config = "
                + repr(
                    {
                        "loggers": {
                            "psycopg": {"level": "DEBUG", "handlers": ["console"]},
                        }
                    }
                ),
            ]
        )
    )
    said = {}
    with server:
        conversation = f"c-{uuid.uuid4().hex}"
        frames = answer(
            server, send_message("openai", conversation), lambda f: f["type"] == "ERROR"
        )
        assert frames[-1]["code"] == "store_unavailable", frames
        said["frames"] = json.dumps(frames)
        for path in (
            "streamchat/api/conversations",
            f"streamchat/api/conversations/{conversation}",
            f"streamchat/api/conversations/{conversation}/export",
        ):
            status, body = rest(server, path)
            assert status == 503 and json.loads(body)["reason"] == "store_unavailable", (
                path,
                status,
                body,
            )
            said[path] = body
        status, body = rest(server, "streamchat/api/agents")
        assert status in (200, 503), (status, body)
        said["agents"] = body
    server.wait_exit()
    log = server.log()
    said["log"] = log
    assert CONFIG_DUMP in log and "'api_key': '***'" in log  # the dump was made, and read here
    assert "chat:***@127.0.0.1" in log  # the store URL is shown, without its password
    assert not found(said, secrets), (found(said, secrets), leaking_lines(log, secrets))


# -- model servers that quote the keys, with a working SQLite store ------------------------


@pytest.fixture(scope="module")
def model():
    """A model server that says back the key it was sent: in an error body (model
    ``quote-400``), and in a reply's text and a mid-stream error event (``quote-stream``)."""
    with HostileModel() as server:
        server.scripts["quote-400"] = Script(
            [
                json.dumps(
                    {
                        "error": {
                            "message": f"Bad key {ENV_KEY[:12]}\n{ENV_KEY[12:]} (see /v1?key="
                            f"{quote(ENV_KEY)})"
                        }
                    }
                ).encode()
            ],
            status=400,
            content_type="application/json",
        )
        server.scripts["quote-stream"] = Script(
            [
                delta(f"You sent {NAMED_KEY[:9]}"),
                delta(f"{NAMED_KEY[9:]} as your key."),
                event({"error": {"message": f"key {NAMED_KEY} is revoked"}}),
            ]
        )
        yield server


@pytest.mark.subprocess
def test_model_servers_that_quote_the_keys_show_them_nowhere(tmp_path, model):
    """The config is a Python file that fills ``StreamChatApp.agents`` with ``.update()``, which
    makes traitlets dump the config at DEBUG before any extension is imported; the file's first
    line starts the redaction, as ``redact.protect_server_log`` documents."""
    secrets = [NAMED_KEY, ENV_KEY]
    env = isolated_env(tmp_path, OPENAI_API_KEY=ENV_KEY)
    server = JupyterServer(tmp_path, "--debug", env=env)
    settings = {"base_url": model.url, "max_retries": 0}
    named = {"class": "openai", "api_key": NAMED_KEY, "model": "quote-stream", **settings}
    config_file(server).write_text(
        "\n".join(
            [
                "from jupyter_streamchat.redact import protect_server_log; protect_server_log()",
                "c.OpenAIAgent.model = 'quote-400'",
                *(f"c.OpenAIAgent.{name} = {value!r}" for name, value in settings.items()),
                f"c.StreamChatApp.agents.update({{'gpt': {named!r}}})",
            ]
        )
    )
    said = {}
    finals, texts = {}, {}
    with server:
        for agent_id in ("openai", "gpt"):
            conversation = f"c-{uuid.uuid4().hex}"
            frames = answer(
                server,
                send_message(agent_id, conversation),
                lambda f: f["type"] == "ERROR" or f.get("isComplete"),
            )
            finals[agent_id] = frames[-1]
            texts[agent_id] = "".join(f.get("chunk", "") for f in frames)
            said[f"frames {agent_id}"] = json.dumps(frames)
            for path in (
                f"streamchat/api/conversations/{conversation}",
                f"streamchat/api/conversations/{conversation}/export",
            ):
                status, body = rest(server, path)
                assert status == 200, (path, status, body)
                said[path] = body
        for path in ("streamchat/api/conversations", "streamchat/api/agents"):
            status, body = rest(server, path)
            assert status == 200, (path, status, body)
            said[path] = body
    server.wait_exit()
    log = server.log()
    said["log"] = log
    assert len(model.requests) == 2  # each model server was asked, with its key
    for agent_id, final in finals.items():
        assert final.get("status") == "error" and MASK in final["error"], (agent_id, final)
    assert texts["gpt"] == f"You sent {MASK} as your key."  # the reply's text, redacted
    # The config was dumped before jupyter_server imported any extension, and it was redacted.
    assert 0 <= log.find(CONFIG_DUMP) < log.find("Extension package jupyter_streamchat took")
    assert f"'api_key': '{MASK}'" in log
    assert not found(said, secrets), (found(said, secrets), leaking_lines(log, secrets))
