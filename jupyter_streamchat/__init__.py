"""Streaming chat with AI agents inside Jupyter."""

from .agents import Agent, AgentError, AgentRequest, Reasoning, ToolCall, Usage

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    from .redact import protect_server_log
    from .server.app import StreamChatApp

    # Before the server links its extensions, which logs their config (API keys in it) at DEBUG.
    protect_server_log()

    return [{"module": "jupyter_streamchat", "app": StreamChatApp}]


def _jupyter_labextension_paths():
    # The prebuilt JupyterLab extension (installed as shared data; this entry lets
    # `jupyter labextension develop . --overwrite` link a checkout's build instead).
    return [{"src": "labextension", "dest": "jupyter-streamchat"}]


def load_ipython_extension(ipython):
    """``%load_ext jupyter_streamchat``: the ``%%chat`` cell magic."""
    from .kernel.magic import load_ipython_extension as load

    load(ipython)


def __getattr__(name):
    # The widget pulls in anywidget and ipywidgets: import it only when a notebook asks for it,
    # not when the server loads the extension.
    if name == "ChatWidget":
        from .widget import ChatWidget

        return ChatWidget
    if name == "connect":
        from .kernel.follower import connect

        return connect
    if name == "Chat":
        from .kernel.chat import Chat

        return Chat
    if name == "agent":
        from .kernel.agents import agent

        return agent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Agent",
    "AgentError",
    "AgentRequest",
    "Chat",
    "ChatWidget",
    "Reasoning",
    "ToolCall",
    "Usage",
    "__version__",
    "agent",
    "connect",
]
