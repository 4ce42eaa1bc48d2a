"""docs/openapi.yaml against the server: the same routes and methods as the handlers, and real
answers (good and bad) that validate against the response schemas it gives for their status."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.web import RequestHandler

from jupyter_streamchat.server import handlers as streamchat_handlers
from helpers import new_id

SPEC_PATH = Path(__file__).parent.parent / "docs" / "openapi.yaml"
API_PREFIX = "/streamchat/api"
METHODS = ("get", "head", "post", "put", "patch", "delete", "options")


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text())


def _inline(node, spec: dict, seen=()):
    """The schema with every local ``$ref`` replaced by what it points at."""
    if isinstance(node, dict):
        if "$ref" in node:
            pointer = node["$ref"]
            assert pointer.startswith("#/") and pointer not in seen, pointer
            target = spec
            for part in pointer[2:].split("/"):
                target = target[part]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(copy.deepcopy(target), spec, (*seen, pointer)), **rest}
        return {k: _inline(v, spec, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, spec, seen) for v in node]
    return node


def _route_paths() -> dict:
    """{OpenAPI path: handler class} for every REST route the extension serves."""
    routes = {}
    for pattern, handler, *_ in streamchat_handlers.handlers:
        if not pattern.startswith(API_PREFIX + "/"):
            continue  # the WebSocket is described in docs/protocol.md
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern[len(API_PREFIX) :])
        assert not re.search(r"[()\[\]\\^$*+?]", path), f"route not understood: {pattern}"
        routes[path] = handler
    return routes


def _handler_methods(handler) -> set:
    """The HTTP methods the extension itself answers (Jupyter's APIHandler adds OPTIONS for
    CORS preflight to every API, ours included; it is not part of this API)."""
    return {
        m
        for m in METHODS
        if getattr(handler, m) is not getattr(RequestHandler, m)
        and getattr(handler, m).__module__.startswith("jupyter_streamchat")
    }


def test_every_route_is_described_and_nothing_else(spec):
    routes = _route_paths()
    assert set(routes) == set(spec["paths"])
    for path, handler in routes.items():
        described = {m for m in spec["paths"][path] if m in METHODS}
        assert described == _handler_methods(handler), path
        for method in described:
            operation = spec["paths"][path][method]
            assert operation.get("operationId") and operation.get("summary"), (path, method)
            assert "403" in operation["responses"], (path, method)  # all need credentials
            params = {p["name"] for p in _inline(spec["paths"][path].get("parameters", []), spec)}
            params |= {p["name"] for p in _inline(operation.get("parameters", []), spec)}
            assert set(re.findall(r"{(\w+)}", path)) <= params, (path, method)


def test_the_spec_is_valid_openapi(spec):
    assert spec["openapi"].startswith("3.1")
    # Every schema is a valid JSON Schema (2020-12, as OpenAPI 3.1 uses), refs resolved.
    for name, schema in spec["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(_inline(schema, spec))
    assert spec["components"]["securitySchemes"]["jupyterToken"]["in"] == "header"


@pytest.fixture
def call(jp_serverapp, http_server_client, jp_http_port, jp_base_url, spec):
    """``await call(method, openapi_path, fill, query="", body=None)`` sends the request,
    checks the answer against the spec, and returns (status, parsed body or text)."""
    token = jp_serverapp.identity_provider.token
    checked = []

    async def send(method, path, fill=None, query="", body=None, token_ok=True):
        url = (
            f"http://127.0.0.1:{jp_http_port}{jp_base_url}streamchat/api"
            + path.format(**(fill or {}))
            + query
        )
        headers = {"Authorization": f"token {token}" if token_ok else ""}
        response = await AsyncHTTPClient().fetch(
            HTTPRequest(
                url,
                method=method.upper(),
                body=body,
                headers=headers,
                allow_nonstandard_methods=True,
            ),
            raise_error=False,
        )
        operation = spec["paths"][path][method]
        status = str(response.code)
        assert status in operation["responses"], (method, path, status, response.body[:300])
        described = _inline(operation["responses"][status], spec)
        content = described.get("content")
        if not content:
            assert not response.body, (method, path, status)
            checked.append((method, path, status))
            return response.code, None
        media = response.headers["Content-Type"].split(";")[0].strip()
        assert media in content, (method, path, status, media)
        if media == "application/json":
            value = json.loads(response.body)
        else:
            value = response.body.decode("utf-8")
        jsonschema.validate(value, content[media]["schema"], cls=jsonschema.Draft202012Validator)
        for header in described.get("headers", {}):
            assert header in response.headers, (method, path, status, header)
        checked.append((method, path, status))
        return response.code, value

    send.checked = checked
    return send


async def test_real_answers_match_the_spec(chat, call, spec):
    client = await chat()
    conversation = new_id("c-spec-")
    await client.send_message("what the spec says", conversation=conversation)
    accepted = await client.expect("MESSAGE_ACCEPTED")
    await client.chunks_until_complete(accepted["messageId"])
    one = {"conversation_id": conversation}
    ghost = {"conversation_id": new_id("no-such-")}
    bad_id = {"conversation_id": "%ED%A0%80"}

    assert (await call("get", "/agents"))[0] == 200
    status, page = await call("get", "/conversations", query="?limit=1")
    assert status == 200 and page["conversations"]
    assert (await call("get", "/conversations", query="?q=spec+says"))[1]["conversations"][0][
        "snippet"
    ]
    assert (await call("get", "/conversations", query="?limit=%D9%A1"))[0] == 400
    assert (await call("get", "/conversations", query="?after=forged"))[0] == 400
    assert (await call("get", "/conversations", token_ok=False))[0] == 403
    assert (await call("get", "/conversations/{conversation_id}", one))[0] == 200
    assert (await call("get", "/conversations/{conversation_id}", ghost))[0] == 404
    assert (await call("get", "/conversations/{conversation_id}", bad_id))[0] == 400
    assert (await call("get", "/conversations/{conversation_id}/export", one))[0] == 200
    assert (await call("get", "/conversations/{conversation_id}/export", ghost))[0] == 404
    assert (
        await call(
            "patch", "/conversations/{conversation_id}", one, body=json.dumps({"title": " spec "})
        )
    )[1]["title"] == "spec"
    assert (
        await call("patch", "/conversations/{conversation_id}", one, body='{"title": "\\ud800"}')
    )[0] == 400
    assert (await call("patch", "/conversations/{conversation_id}", ghost, body='{"title": "x"}'))[
        0
    ] == 404
    assert (await call("delete", "/conversations/{conversation_id}", one))[0] == 204
    assert (await call("delete", "/conversations/{conversation_id}", one))[0] == 404

    # Every operation was tried at least once.
    operations = {(m, p) for p, item in spec["paths"].items() for m in item if m in METHODS}
    assert operations == {(m, p) for m, p, _ in call.checked}


@pytest.fixture
def jp_server_config():
    from helpers import streamchat_config

    return streamchat_config(EchoAgent={"delay": 0.0})


async def test_store_unavailable_matches_the_spec(streamchat_app, call, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be")
    streamchat_app.hub.store.path = str(blocker / "chat.db")
    status, body = await call("get", "/conversations")
    assert status == 503 and body["reason"] == "store_unavailable"
