"""Agents: turn a conversation into an async iterator of text chunks."""

from .base import Agent, AgentRequest, split_tokens
from .registry import ENTRY_POINT_GROUP, load_agents

__all__ = ["Agent", "AgentRequest", "ENTRY_POINT_GROUP", "load_agents", "split_tokens"]
