"""Streaming chat with AI agents inside Jupyter."""

from .agents import Agent, AgentRequest

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    from .app import StreamChatApp

    return [{"module": "jupyter_streamchat", "app": StreamChatApp}]


__all__ = ["Agent", "AgentRequest", "__version__"]
