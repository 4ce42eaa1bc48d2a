"""The WebSocket asks the server's authorizer for action ``execute`` on resource ``streamchat``."""

import pytest
from tornado.httpclient import HTTPClientError

from helpers import streamchat_config


@pytest.fixture
def jp_server_authorizer():
    from jupyter_server.auth import Authorizer

    class NoStreamchatExecute(Authorizer):
        """Lets everything through but ``execute`` on ``streamchat``."""

        def is_authorized(self, handler, user, action, resource):
            return not (resource == "streamchat" and action == "execute")

    return NoStreamchatExecute


@pytest.fixture
def jp_server_config(jp_server_authorizer):
    config = streamchat_config()
    config["ServerApp"]["authorizer_class"] = jp_server_authorizer
    return config


async def test_websocket_authorizes_execute_on_streamchat(jp_ws_fetch, rest):
    with pytest.raises(HTTPClientError) as e:
        await jp_ws_fetch("streamchat", "ws")
    assert e.value.code == 403
    assert "agents" in await rest("agents")  # reads are a different action
