"""Agents: turn a conversation into an async iterator of text chunks."""

from .base import (
    ALLOW_ALWAYS,
    ALLOW_ONCE,
    REJECT,
    Agent,
    AgentError,
    AgentRequest,
    ApprovalTimeout,
    Reasoning,
    ToolCall,
    Usage,
    split_tokens,
)
from .registry import ENTRY_POINT_GROUP, load_agents

__all__ = [
    "ALLOW_ALWAYS",
    "ALLOW_ONCE",
    "REJECT",
    "Agent",
    "AgentError",
    "AgentRequest",
    "ApprovalTimeout",
    "ENTRY_POINT_GROUP",
    "Reasoning",
    "ToolCall",
    "Usage",
    "load_agents",
    "split_tokens",
]
