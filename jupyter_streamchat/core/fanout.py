"""Subscription state in one place: which client follows which conversation and which reply.

A client follows a conversation after SUBSCRIBE and a reply after sending its message or
RESUME; UNSUBSCRIBE ends both for that conversation (a view switched to another one). Every
frame published on the bus goes to the followers of its conversation and of its reply, each
through its own :class:`~.delivery.Subscriber`, which drops what that client already holds and
catches it up from the store when it fell behind.

A client watches the conversation list after WATCH_CONVERSATIONS, until UNWATCH_CONVERSATIONS
or its socket closes; the list's frames (``ListingChange``) go to the watchers alone.
"""

from __future__ import annotations

from collections import defaultdict

from .bus import Accepted, ListingChange, Published, ReplyFrame
from .delivery import Subscriber


class Fanout:
    def __init__(self):
        self.clients: set = set()
        self._conversations: dict = defaultdict(set)  # conversation id -> subscribers
        self._replies: dict = defaultdict(set)  # reply id -> subscribers
        self._list_watchers: set = set()  # subscribers watching the conversation list

    def add(self, subscriber: Subscriber) -> None:
        self.clients.add(subscriber)

    def remove(self, subscriber: Subscriber) -> None:
        subscriber.detach()
        self.clients.discard(subscriber)
        self._list_watchers.discard(subscriber)
        for keys, index in (
            (subscriber.conversations, self._conversations),
            (subscriber.replies, self._replies),
        ):
            for key in keys:
                self._unfollow(index, key, subscriber)

    def follow_conversation(self, subscriber: Subscriber, conversation_id: str) -> None:
        self._conversations[conversation_id].add(subscriber)
        subscriber.follow(conversation_id)

    def follow_reply(self, subscriber: Subscriber, message_id: str, conversation_id: str) -> None:
        self._replies[message_id].add(subscriber)
        subscriber.follow_reply(message_id, conversation_id)

    def unfollow_conversation(self, subscriber: Subscriber, conversation_id: str) -> None:
        """No more frames of the conversation: neither its own nor those of its replies that
        the client sent or resumed, nor catch-ups of them."""
        self._unfollow(self._conversations, conversation_id, subscriber)
        for message_id in subscriber.unfollow(conversation_id):
            self._unfollow(self._replies, message_id, subscriber)

    def watch_list(self, subscriber: Subscriber) -> None:
        self._list_watchers.add(subscriber)

    def unwatch_list(self, subscriber: Subscriber) -> None:
        self._list_watchers.discard(subscriber)

    @property
    def list_watched(self) -> bool:
        """Whether any client watches the conversation list (else its changes are not read)."""
        return bool(self._list_watchers)

    def _list_audience(self, conversation_id: str) -> set:
        """Who is told of a change to this conversation: its owner's watching clients.

        Every conversation belongs to the one user this server runs for, and every client was
        authenticated as that user, so that is every watcher. Where one server serves several
        users, this is the place that must pick the owner's clients only.
        """
        return self._list_watchers

    @staticmethod
    def _unfollow(index: dict, key: str, subscriber: Subscriber) -> None:
        followers = index.get(key)
        if followers is not None:
            followers.discard(subscriber)
            if not followers:
                del index[key]

    def deliver(self, event: Published) -> None:
        """The bus's listener."""
        if isinstance(event, ListingChange):
            for subscriber in list(self._list_audience(event.conversation_id)):
                subscriber.send(event.text)
            return
        followers = self._conversations.get(event.conversation_id, ())
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
