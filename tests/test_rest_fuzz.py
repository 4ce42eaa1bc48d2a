"""The REST API fuzzed by schemathesis from docs/openapi.yaml, against a real ``jupyter server``.

Schemathesis generates requests from the spec, valid ones and ones that break it (wrong types,
out-of-range numbers, strings of any Unicode, missing or extra body fields), sends them with
the server's token and checks every answer: never a 5xx (a 503 would call a client's mistake a
store outage), a status the spec lists for the operation, its content type and its JSON schema,
and valid data accepted, invalid data refused with a 4xx. A few conversations are stored first,
and each operation also runs against their ids, so GET, PATCH, export and DELETE reach the
store rather than only their 404s.

Examples are bounded (``MAX_EXAMPLES`` per operation and generation mode) to keep the module
well under a minute and a half.
"""

from __future__ import annotations

from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from faultfs import WireClient  # noqa: E402
from jupyter_streamchat import protocol as p  # noqa: E402
from server_process import JupyterServer  # noqa: E402

pytestmark = pytest.mark.subprocess

SPEC = Path(__file__).parent.parent / "docs" / "openapi.yaml"
MAX_EXAMPLES = 50
SEEDED = [f"c-seed-{i}" for i in range(6)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("restfuzz")
    with JupyterServer(base, "--EchoAgent.delay=0", name="restfuzz") as s:
        client = WireClient.to(s)
        try:
            for i, conversation in enumerate(SEEDED):
                client.send(
                    {
                        "type": "SEND_MESSAGE",
                        "conversationId": conversation,
                        "agentId": "echo",
                        "text": f"seeded conversation {i}: é ü 字",
                        "clientMessageId": f"m-seed-{i}",
                    }
                )
                while True:
                    frame = client.recv()
                    if frame["type"] == "MESSAGE_CHUNK" and frame["isComplete"]:
                        break
        finally:
            client.close()
        yield s
        log = s.log()
    assert "Traceback" not in log, log[-5000:]  # nothing the fuzz sent crashed a handler


# A valid cursor is one the server gave out (`next`): made the server's way, from any time and
# any id, so that valid data is what the server must accept.
schemathesis.openapi.format(
    "streamchat-cursor",
    st.builds(p.list_cursor, st.floats(0, 4e9), st.text(min_size=1, max_size=p.MAX_ID_LENGTH)),
)
SCHEMA = schemathesis.openapi.from_path(str(SPEC))
# This API ignores query parameters it does not read (the token may come as one).
SCHEMA.config.generation.update(allow_extra_parameters=False)
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]
STORED = [op for op in OPERATIONS if "{conversation_id}" in op.path and op.method != "delete"]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
FUZZ = settings(
    max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _check(server, strategy) -> None:
    @given(case=strategy)
    @FUZZ
    def run(case):
        case.call_and_validate(
            base_url=server.http_url("streamchat/api"), headers=server.auth_headers(), timeout=30
        )

    run()


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_fuzzed_requests_get_documented_answers(server, operation, mode):
    _check(server, operation.as_strategy(generation_mode=mode))


# Deletes are left out: they would empty the stored conversations the others need.
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
@pytest.mark.parametrize("operation", STORED, ids=lambda op: op.label)
def test_fuzzed_requests_about_stored_conversations(server, operation, mode):
    _check(
        server,
        st.sampled_from(SEEDED).flatmap(
            lambda cid: operation.as_strategy(
                generation_mode=mode, path_parameters={"conversation_id": cid}
            )
        ),
    )
