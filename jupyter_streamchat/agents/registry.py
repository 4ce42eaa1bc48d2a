"""Finding agents: every entry point in the group ``jupyter_streamchat.agents``.

The entry point's name is the agent id; its value is an :class:`Agent` subclass. The built-in
agents are registered the same way (see pyproject.toml), so a plug-in is a peer of them.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from .base import Agent

ENTRY_POINT_GROUP = "jupyter_streamchat.agents"


def load_agents(parent, log) -> dict:
    """Instantiate every installed agent; a broken plug-in is logged and skipped."""
    agents: dict = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if ep.name in agents:
            log.warning("streamchat: agent id %r defined twice; keeping the first (%s)",
                        ep.name, type(agents[ep.name]).__module__)
            continue
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Agent)):
                raise TypeError(f"{ep.value} is not a subclass of jupyter_streamchat.Agent")
            agents[ep.name] = cls(ep.name, parent=parent)
        except Exception:
            log.exception("streamchat: skipping agent plug-in %r (%s)", ep.name, ep.value)
    return agents
