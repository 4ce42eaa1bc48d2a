"""Agents: turn a conversation into an async iterator of text chunks."""

from .base import Agent, AgentError, AgentRequest, Reasoning, Usage, split_tokens
from .registry import ENTRY_POINT_GROUP, load_agents

__all__ = [
    "Agent",
    "AgentError",
    "AgentRequest",
    "ENTRY_POINT_GROUP",
    "Reasoning",
    "Usage",
    "load_agents",
    "split_tokens",
]
