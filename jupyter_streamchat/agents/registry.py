"""Finding agents: every entry point in the group ``jupyter_streamchat.agents``, and named
instances from config.

The entry point's name is the agent id; its value is an :class:`Agent` subclass. The built-in
agents are registered the same way (see pyproject.toml), so a plug-in is a peer of them.

Named agents (``StreamChatApp.agents``) are further instances of a class with settings of their
own: ``{"local": {"class": "openai", "model": "llama3.2"}}`` adds agent ``local``, an
``openai`` agent whose ``model`` trait is set over the class config.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .base import Agent

ENTRY_POINT_GROUP = "jupyter_streamchat.agents"


def _check(cls, where: str) -> type:
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise TypeError(f"{where} is not a subclass of jupyter_streamchat.Agent")
    return cls


def load_agents(parent, log, named: dict | None = None) -> dict:
    """Instantiate every installed agent, then the named ones; a broken plug-in or entry is
    logged and skipped."""
    agents: dict = {}
    classes: dict = {}  # entry-point name -> class, for named agents
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name):
        if ep.name in agents:
            log.warning(
                "streamchat: agent id %r defined twice; keeping the first (%s)",
                ep.name,
                type(agents[ep.name]).__module__,
            )
            continue
        try:
            cls = classes[ep.name] = _check(ep.load(), ep.value)
            agent = cls(ep.name, parent=parent)
            if agent.offered:
                agents[ep.name] = agent
            else:
                log.info(
                    "streamchat: agent %r is not offered until it is configured (%s)",
                    ep.name,
                    agent.description,
                )
        except Exception:
            log.exception("streamchat: skipping agent plug-in %r (%s)", ep.name, ep.value)
    for agent_id, settings in (named or {}).items():
        try:
            agents[agent_id] = _named(agent_id, settings, classes, parent)
        except Exception as e:
            log.error("streamchat: skipping agent %r: %s", agent_id, e)
    return agents


def _named(agent_id: str, settings, classes: dict, parent) -> Agent:
    if not isinstance(settings, dict) or not isinstance(settings.get("class"), str):
        raise ValueError('expected a dict with "class": an agent plug-in name or an import path')
    settings = dict(settings)
    name = settings.pop("class")
    cls = classes.get(name) or _check(_import(name), name)
    unknown = sorted(set(settings) - set(cls.class_trait_names(config=True)))
    if unknown:
        known = ", ".join(sorted(cls.class_trait_names(config=True)))
        raise ValueError(
            f"{cls.__name__} has no setting {', '.join(map(repr, unknown))}; it has: {known}"
        )
    return cls(agent_id, parent=parent, **settings)


def _import(path: str):
    """``package.module:Class`` or ``package.module.Class``."""
    module, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module or not attr:
        raise ValueError(
            f"no agent plug-in {path!r}, and it is not an import path (package.module:Class)"
        )
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"no agent plug-in {path!r}, and it cannot be imported: {e}") from None
