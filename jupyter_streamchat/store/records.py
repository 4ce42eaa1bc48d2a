"""What a store hands back: plain typed records. Wire shapes live in ``protocol`` alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

# A message's status, as stored (and sent as such on the last frame of a reply).
STREAMING = "streaming"
COMPLETE = "complete"
STOPPED = "stopped"
INTERRUPTED = "interrupted"  # the process producing it died: a server restart, a kernel's end
ERROR = "error"
FINAL_STATUSES = frozenset({COMPLETE, STOPPED, INTERRUPTED, ERROR})


@dataclass
class MessageRecord:
    message_id: str
    conversation_id: str
    role: str  # "user" or "assistant"
    agent_id: str
    text: str  # a reply's text: its chunks up to last_seq, concatenated
    status: str
    last_seq: int
    error: Optional[str] = None
    created_at: float = 0.0
    truncated: bool = False  # text holds only the start of the reply (a history page's budget)
    reasoning: str = ""  # a reply's thinking, up to last_seq
    usage: Optional[dict] = None  # model, input_tokens, output_tokens, first_token_seconds, ...
    # A reply's tool calls: the latest state of each (wire dicts), in first-appearance order,
    # as of last_seq; None when it has none.
    tool_calls: Optional[list] = None
    context: Optional[list] = None  # a user message's context items (wire dicts), as sent


@dataclass
class Exchange:
    """A user message and the reply it started, as returned for a SEND_MESSAGE."""

    client_message_id: str
    conversation_id: str
    user_message_id: str
    message_id: str
    agent_id: str
    text: str
    created: bool  # False when the clientMessageId had been seen before in that conversation
    user: str = ""  # whose conversation it is


@dataclass
class Append:
    """Frames of one reply to store in one go: chunks for seqs first_seq, first_seq+1, ...
    and, frame by frame, the thinking text each adds (``reasoning``, empty or as long) and the
    tool-call states that changed in it (``tool_calls``: None, or as long as ``chunks``, each
    None or a list of wire state dicts).

    ``tool_state``, when given, is the reply's whole merged list of tool-call states after
    this append: it replaces the one kept with the reply, in the same transaction.

    With ``status`` set, the last chunk is the reply's final frame and the reply ends.
    """

    message_id: str
    first_seq: int
    chunks: list
    status: Optional[str] = None
    error: Optional[str] = None
    reasoning: Optional[list] = None
    usage: Optional[dict] = None
    tool_calls: Optional[list] = None
    tool_state: Optional[list] = None

    def __post_init__(self):
        # Frames are stored pairwise with their tool calls: a shorter list would drop frames.
        if self.tool_calls is not None and len(self.tool_calls) != len(self.chunks):
            raise ValueError(
                f"tool_calls has {len(self.tool_calls)} items for {len(self.chunks)} chunks"
            )


@dataclass
class HistoryPage:
    """Consecutive messages of a conversation, oldest first; ``has_more`` when older exist."""

    conversation_id: str
    messages: list = field(default_factory=list)
    has_more: bool = False


@dataclass
class ConversationRecord:
    conversation_id: str
    title: str  # the one given, else the start of the first user message
    created_at: float
    updated_at: float
    message_count: int
    agent_id: str = ""  # of the latest message
    streaming: bool = False  # a reply in it is being generated
    snippet: Optional[str] = None  # in search results: a message's text around the match
