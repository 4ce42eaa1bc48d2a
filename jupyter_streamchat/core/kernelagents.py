"""Notebook agents: functions a kernel registers over its connection, answering as agents.

A kernel offers a function as an agent (REGISTER_AGENT); the hub lists it beside the server's
own agents (GET api/agents, and AGENTS_CHANGED to every client) and a reply to it runs like
any other, through a proxy, :class:`KernelAgent`, whose ``stream`` asks the kernel
(AGENT_REQUEST) and yields what the kernel sends back (AGENT_OUTPUT) until AGENT_DONE. The hub
keeps owning ids, seq numbers, storage and stop: a stop cancels the proxy's stream, which
tells the kernel (AGENT_CANCEL).

A name means one agent for every picker and every stored conversation, so it belongs to one
connection at a time: a server agent's id cannot be taken (``agent_exists``), nor another
kernel's (``agent_taken``); the same connection registering it again replaces its agent (a
cell run again). When the connection goes away (the kernel died, restarted or was shut down)
its agents go, and the replies they were writing end ``interrupted``, keeping their text.

What one kernel can cost is bounded: MAX_AGENTS agents per connection, and per reply at most
MAX_QUEUED_CHARS of output waiting for the reply to take it; past that the hub reads nothing
more from that connection until the reply has caught up, so the kernel waits, not the hub's
memory. Each frame's text is bounded by the hub's message size limit (protocol.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Optional

from .. import protocol as p
from ..agents import Agent, AgentError, Reasoning, Usage
from .reply import AgentInterrupted

if TYPE_CHECKING:
    from ..agents import AgentRequest
    from .delivery import Subscriber
    from .hub import Hub

# Most agents one connection may register.
MAX_AGENTS = 100

# Most output characters of one reply waiting for the reply to take them.
MAX_QUEUED_CHARS = 4 * 1024 * 1024

# Request ids per connection whose late frames (sent before the kernel saw the AGENT_CANCEL)
# are dropped without an ERROR.
ENDED_REMEMBERED = 1000

REQUESTS = (p.RegisterAgent, p.UnregisterAgent, p.AgentOutput, p.AgentDone)

_DONE = object()  # the kernel said AGENT_DONE without an error


class KernelAgent(Agent):
    """The hub's side of a notebook agent: runs in the kernel that registered it."""

    def __init__(
        self,
        agent_id: str,
        owner: "Subscriber",
        agents: "KernelAgents",
        owner_label: str = "",
        **kwargs,
    ):
        super().__init__(agent_id, **kwargs)
        self.owner = owner
        self.owner_label = owner_label
        self._agents = agents

    def info(self) -> dict:
        info = super().info()
        info["kernel"] = True
        if self.owner_label:
            info["owner"] = self.owner_label
        return info

    async def stream(self, request: "AgentRequest"):
        call = self._agents.open_call(self, request)
        try:
            while True:
                item = await call.next()
                if item is _DONE:
                    return
                yield item
        finally:
            self._agents.close_call(call)


class _Call:
    """One AGENT_REQUEST: what the kernel sent for it, waiting for the reply to take it."""

    __slots__ = (
        "request_id",
        "agent_id",
        "owner",
        "items",
        "chars",
        "outcome",
        "closed",
        "wake",
        "room",
    )

    def __init__(self, request_id: str, agent_id: str, owner: "Subscriber"):
        self.request_id = request_id
        self.agent_id = agent_id
        self.owner = owner
        self.items: deque = deque()  # str, Reasoning, Usage
        self.chars = 0
        self.outcome = None  # _DONE, or the exception the stream raises once items are out
        self.closed = False  # the reply no longer reads
        self.wake = asyncio.Event()
        self.room = asyncio.Event()
        self.room.set()

    def end(self, outcome) -> None:
        if self.outcome is None:
            self.outcome = outcome
            self.wake.set()

    async def next(self):
        while not self.items:
            if self.outcome is _DONE:
                return _DONE
            if self.outcome is not None:
                raise self.outcome
            self.wake.clear()
            await self.wake.wait()
        item = self.items.popleft()
        if not isinstance(item, Usage):
            self.chars -= _size(item)
            if self.chars < MAX_QUEUED_CHARS:
                self.room.set()
        return item


def _size(item) -> int:
    """What an output item counts toward MAX_QUEUED_CHARS (a tool-call state counts one)."""
    if isinstance(item, str):
        return len(item)
    if isinstance(item, Reasoning):
        return len(item.text)
    return 1


class KernelAgents:
    """The notebook agents of one hub, by the connection that registered them."""

    def __init__(self, hub: "Hub"):
        self.hub = hub
        self._owned: dict = {}  # subscriber -> {agent id: KernelAgent}
        self._calls: dict = {}  # request id -> _Call
        self._ended: dict = {}  # subscriber -> OrderedDict of its request ids that ended

    def owns(self, subscriber: "Subscriber") -> bool:
        """Whether the connection has notebook agents (its silence then ends replies)."""
        return bool(self._owned.get(subscriber))

    async def handle(self, subscriber: "Subscriber", request) -> None:
        if isinstance(request, p.RegisterAgent):
            self.register(subscriber, request)
        elif isinstance(request, p.UnregisterAgent):
            self.unregister(subscriber, request.agent_id)
        elif isinstance(request, p.AgentOutput):
            await self.output(subscriber, request)
        elif isinstance(request, p.AgentDone):
            call = self._call_of(subscriber, request.request_id)
            if call is not None:
                call.end(
                    _DONE
                    if request.error is None
                    else AgentError(request.error or "the notebook agent failed without saying why")
                )

    # -- registering --------------------------------------------------------------------

    def register(self, subscriber: "Subscriber", request: p.RegisterAgent) -> None:
        agent_id = request.agent_id
        held = self.hub.agents.get(agent_id)
        if held is not None and not isinstance(held, KernelAgent):
            raise p.ProtocolError(
                p.AGENT_EXISTS,
                f"{agent_id!r} is one of the chat server's own agents "
                f"({held.name}, installed or configured there); give the notebook agent "
                "another name",
                agent_id=agent_id,
            )
        if isinstance(held, KernelAgent) and held.owner is not subscriber:
            # Another user's notebook path is theirs to know.
            mine = held.owner.user == subscriber.user
            where = f" ({held.owner_label})" if held.owner_label and mine else ""
            raise p.ProtocolError(
                p.AGENT_TAKEN,
                f"agent {agent_id!r} is already defined by another kernel{where}; "
                "a name means one agent for every chat and stored conversation, so this one "
                "was not registered. Give it another name, or remove it from that kernel "
                f"(jupyter_streamchat.agent.unregister({agent_id!r}), or shut the kernel "
                "down) and run this again",
                agent_id=agent_id,
            )
        owned = self._owned.setdefault(subscriber, {})
        if agent_id not in owned and len(owned) >= MAX_AGENTS:
            raise p.ProtocolError(
                p.TOO_MANY_AGENTS,
                f"this connection already has {len(owned)} notebook agents, "
                "the most it may; unregister one first",
                agent_id=agent_id,
            )
        if subscriber.closed:
            return  # it went away meanwhile: nothing to keep for it
        name = request.name or agent_id
        same = isinstance(held, KernelAgent) and (
            held.name,
            held.description,
            held.owner_label,
        ) == (name, request.description, request.owner)
        if not same:
            owned[agent_id] = self.hub.agents[agent_id] = KernelAgent(
                agent_id,
                subscriber,
                self,
                request.owner,
                name=name,
                description=request.description,
            )
        subscriber.send(p.dumps(p.agent_registered_frame(agent_id)))
        if not same:
            self._changed()

    def unregister(self, subscriber: "Subscriber", agent_id: str) -> None:
        """Only the connection's own agent goes; any other id is left alone (so a repeated
        UNREGISTER_AGENT is harmless). Replies it is writing go on to their end."""
        agent = self._owned.get(subscriber, {}).pop(agent_id, None)
        if agent is not None:
            if self.hub.agents.get(agent_id) is agent:
                del self.hub.agents[agent_id]
            self._changed()

    def disconnected(self, subscriber: "Subscriber") -> None:
        """The connection is gone: its agents go, and their replies end ``interrupted``."""
        owned = self._owned.pop(subscriber, {})
        self._ended.pop(subscriber, None)
        for agent_id, agent in owned.items():
            if self.hub.agents.get(agent_id) is agent:
                del self.hub.agents[agent_id]
        for call in [c for c in self._calls.values() if c.owner is subscriber]:
            call.end(
                AgentInterrupted(f"the kernel running notebook agent {call.agent_id!r} went away")
            )
            call.room.set()  # an AGENT_OUTPUT waiting for room gives up
        if owned:
            self._changed()

    def _changed(self) -> None:
        """Tell every client the agents it may now use (each user sees their own kernels')."""
        frames: dict = {}
        for subscriber in list(self.hub.fanout.clients):
            if subscriber.user not in frames:
                infos = self.hub.agent_infos(subscriber.user)
                frames[subscriber.user] = p.dumps(p.agents_changed_frame(infos))
            subscriber.send(frames[subscriber.user])

    # -- replies ------------------------------------------------------------------------

    def open_call(self, agent: KernelAgent, request: "AgentRequest") -> _Call:
        call = _Call(uuid.uuid4().hex, agent.agent_id, agent.owner)
        self._calls[call.request_id] = call
        if agent.owner.closed:  # gone between the message and the start of its reply
            call.end(
                AgentInterrupted(f"the kernel running notebook agent {agent.agent_id!r} went away")
            )
        else:
            agent.owner.send(
                p.dumps(p.agent_request_frame(call.request_id, agent.agent_id, request))
            )
        return call

    def close_call(self, call: _Call) -> None:
        """The reply stopped reading (ended, stopped, or its kernel went away)."""
        call.closed = True
        call.items.clear()
        call.room.set()
        self._calls.pop(call.request_id, None)
        owner = call.owner
        if owner.closed:
            return
        if call.outcome is None:  # stopped while the kernel still runs it
            owner.send(p.dumps(p.agent_cancel_frame(call.request_id)))
        ended = self._ended.setdefault(owner, OrderedDict())
        ended[call.request_id] = None
        if len(ended) > ENDED_REMEMBERED:
            ended.popitem(last=False)

    def _call_of(self, subscriber: "Subscriber", request_id: str) -> Optional[_Call]:
        """The open request ``request_id`` of this connection; None for one that ended
        lately (its late frames are dropped); ERROR for any other."""
        call = self._calls.get(request_id)
        if call is not None and call.owner is subscriber:
            return call if call.outcome is None else None
        if request_id in self._ended.get(subscriber, ()):
            return None
        if call is None:
            raise p.ProtocolError(
                p.UNKNOWN_REQUEST,
                f"no request {request_id!r} is open on this connection "
                "(it was never sent here, or ended long ago)",
                request_id=request_id,
            )
        raise p.ProtocolError(
            p.UNKNOWN_REQUEST,
            f"request {request_id!r} was sent to another connection; only "
            "the kernel it was sent to may answer it",
            request_id=request_id,
        )

    async def output(self, subscriber: "Subscriber", request: p.AgentOutput) -> None:
        call = self._call_of(subscriber, request.request_id)
        while (
            call is not None
            and call.chars >= MAX_QUEUED_CHARS
            and not call.closed
            and call.outcome is None
        ):
            # Back-pressure: this connection is read no further until the reply catches up.
            call.room.clear()
            await call.room.wait()
        if call is None or call.closed or call.outcome is not None:
            return
        if request.reasoning:
            call.items.append(Reasoning(request.reasoning))
            call.chars += len(request.reasoning)
        if request.text:
            call.items.append(request.text)
            call.chars += len(request.text)
        if request.tool_calls:  # after the frame's text: they happened in that order
            call.items.extend(request.tool_calls)
            call.chars += len(request.tool_calls)
        if request.usage:
            fields = ("model", "input_tokens", "output_tokens")
            call.items.append(Usage(**{k: request.usage.get(k) for k in fields}))
        call.wake.set()
