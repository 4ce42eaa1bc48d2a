import os
import sys
from pathlib import Path

import pytest

# The test agents are installed as a real entry-point distribution from this directory.
sys.path.insert(0, str(Path(__file__).parent / "plugins"))

from helpers import ChatClient, streamchat_config  # noqa: E402

pytest_plugins = ["pytest_jupyter.jupyter_server"]

if os.environ.get("STREAMCHAT_STORE_URL"):
    # The tests choose their own store; a developer's setting must not leak in.
    del os.environ["STREAMCHAT_STORE_URL"]


@pytest.fixture
def jp_server_config():
    return streamchat_config(EchoAgent={"delay": 0.02})


@pytest.fixture
def streamchat_app(jp_serverapp):
    return jp_serverapp.extension_manager.extension_points["jupyter_streamchat"].app


@pytest.fixture
def chat(jp_ws_fetch):
    """``await chat()`` opens an authenticated WebSocket to streamchat/ws."""
    clients = []

    async def connect(**kwargs):
        client = ChatClient(await jp_ws_fetch("streamchat", "ws", **kwargs))
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def rest(jp_fetch):
    """``await rest("conversations", id)`` -> parsed JSON of GET streamchat/api/..."""
    import json

    async def get(*parts, method="GET"):
        response = await jp_fetch("streamchat", "api", *parts, method=method)
        return json.loads(response.body) if response.body else None

    return get


@pytest.fixture(scope="session")
def pg_cluster():
    """This session's own Postgres cluster (``pgcluster.PgCluster``), started on first use
    and removed at the end. A test may stop, restart or kill it: ``pg_url`` starts it again."""
    from pgcluster import PgCluster

    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def pg_url(pg_cluster):
    """The URL of a fresh database of ``pg_cluster`` (as role ``streamchat``), dropped after
    the test; the cluster is running before and after each test that uses it."""
    pg_cluster.start()  # no-op when it runs
    url = pg_cluster.create_database()
    yield url
    pg_cluster.start()  # the test may have stopped or killed it
    pg_cluster.drop_database(url.rsplit("/", 1)[1])
