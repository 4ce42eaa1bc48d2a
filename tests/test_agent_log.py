"""The server's log says where each model agent points: its model and base URL, never its key
nor a password in the URL (issue 14, point 5)."""

import pytest
from helpers import streamchat_config

KEY = "sk-log-test-key-0123456789"
PASSWORD = "url-pass-9876543210"


@pytest.fixture
def jp_server_config():
    return streamchat_config(
        OpenAIAgent={"api_key": KEY, "base_url": "http://127.0.0.1:9/v1", "model": "llama3.2"},
        StreamChatApp={
            "agents": {
                "local": {
                    "class": "openai",
                    "model": "qwen3:8b",
                    "base_url": f"http://me:{PASSWORD}@models.example:8000/v1",
                    "api_key": KEY,
                },
            }
        },
    )


async def test_log_names_each_model_agents_model_and_url_and_no_key(capfd, rest):
    # capfd comes first: it captures the server's log from its start.
    agents = {a["id"] for a in (await rest("agents"))["agents"]}
    assert {"openai", "local", "echo", "demo"} <= agents
    log = capfd.readouterr().err
    assert "streamchat: agents: " in log
    assert "streamchat: agent openai: model llama3.2 at http://127.0.0.1:9/v1" in log
    assert "streamchat: agent local: model qwen3:8b at http://me:***@models.example:8000/v1" in log
    assert "streamchat: agent echo:" not in log  # not a model agent: nothing to say
    # (pytest-jupyter's own debug dump of the test's config holds them: only our lines count)
    ours = "\n".join(line for line in log.splitlines() if "streamchat:" in line)
    assert KEY not in ours and PASSWORD not in ours
