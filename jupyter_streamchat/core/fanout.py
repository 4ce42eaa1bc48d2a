"""Subscription state in one place: which client follows which conversation and which reply.

A client follows a conversation after SUBSCRIBE and a reply after sending its message or
RESUME; UNSUBSCRIBE ends both for that conversation (a view switched to another one). Every
frame published on the bus goes to the followers of its conversation and of its reply, each
through its own :class:`~.delivery.Subscriber`, which drops what that client already holds and
catches it up from the store when it fell behind.

A client watches the conversation list after WATCH_CONVERSATIONS, until UNWATCH_CONVERSATIONS
or its socket closes; the list's frames (``ListingChange``) go to the watchers alone.

Conversation ids are their user's own, so conversations are indexed by ``(user, id)`` and a
frame reaches only clients of the user whose conversation it is.
"""

from __future__ import annotations

from collections import defaultdict

from .bus import Accepted, ListingChange, Published, ReplyFrame
from .delivery import Subscriber


class Fanout:
    def __init__(self):
        self.clients: set = set()
        self._conversations: dict = defaultdict(set)  # (user, conversation id) -> subscribers
        self._replies: dict = defaultdict(set)  # reply id -> subscribers
        self._list_watchers: dict = defaultdict(set)  # user -> subscribers watching their list

    def add(self, subscriber: Subscriber) -> None:
        self.clients.add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        subscriber.detach()
        self.clients.discard(subscriber)
        self.unwatch_list(subscriber)
        for conversation_id in subscriber.conversations:
            self._unfollow(self._conversations, (subscriber.user, conversation_id), subscriber)
        for message_id in subscriber.replies:
            self._unfollow(self._replies, message_id, subscriber)

    def follow_conversation(self, subscriber: Subscriber, conversation_id: str) -> None:
        self._conversations[subscriber.user, conversation_id].add(subscriber)
        subscriber.follow(conversation_id)

    def follow_reply(self, subscriber: Subscriber, message_id: str, conversation_id: str) -> None:
        self._replies[message_id].add(subscriber)
        subscriber.follow_reply(message_id, conversation_id)

    def unfollow_conversation(self, subscriber: Subscriber, conversation_id: str) -> None:
        """No more frames of the conversation: neither its own nor those of its replies that
        the client sent or resumed, nor catch-ups of them."""
        self._unfollow(self._conversations, (subscriber.user, conversation_id), subscriber)
        for message_id in subscriber.unfollow(conversation_id):
            self._unfollow(self._replies, message_id, subscriber)

    def watch_list(self, subscriber: Subscriber) -> None:
        self._list_watchers[subscriber.user].add(subscriber)

    def unwatch_list(self, subscriber: Subscriber) -> None:
        self._unfollow(self._list_watchers, subscriber.user, subscriber)

    def list_watched(self, user: str) -> bool:
        """Whether any client of ``user`` watches the conversation list (else changes to that
        user's conversations are not read)."""
        return user in self._list_watchers

    def follows(self, user: str, conversation_id: str, message_id: str) -> bool:
        """Whether any client here follows this reply or its conversation."""
        return message_id in self._replies or (user, conversation_id) in self._conversations

    def least_held(self, user: str, conversation_id: str, message_id: str) -> int:
        """The lowest seq of the reply that a client following it here holds (0: none)."""
        holders = self._replies.get(message_id, set()) | self._conversations.get(
            (user, conversation_id), set()
        )
        return min((subscriber.held(message_id) for subscriber in holders), default=0)

    @staticmethod
    def _unfollow(index: dict, key, subscriber: Subscriber) -> None:
        followers = index.get(key)
        if followers is not None:
            followers.discard(subscriber)
            if not followers:
                del index[key]

    def deliver(self, event: Published) -> None:
        """The bus's listener."""
        if isinstance(event, ListingChange):
            # Only the owner's clients: another user's list never hears of it.
            for subscriber in list(self._list_watchers.get(event.user, ())):
                subscriber.send(event.text)
            return
        followers = self._conversations.get((event.user, event.conversation_id), ())
        if isinstance(event, Accepted):
            for subscriber in followers:
                if subscriber is not event.origin:
                    subscriber.send(event.text)
            return
        assert isinstance(event, ReplyFrame)
        watchers = (
            self._replies.pop(event.message_id, None)
            if event.final
            else self._replies.get(event.message_id)
        )
        targets = watchers.union(followers) if watchers and followers else (watchers or followers)
        for subscriber in targets:
            subscriber.deliver_chunk(event.message_id, event.seq, event.text)
        if event.final and watchers:
            for subscriber in watchers:
                subscriber.reply_ended(event.message_id)
