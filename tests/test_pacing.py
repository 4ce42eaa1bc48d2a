"""When a streaming reply's tokens become a frame (core/pacing.py)."""

import math

from jupyter_streamchat.core.pacing import FlushClock


def test_window_stretches_with_the_replies_streaming_at_once():
    live = [1]
    clock = FlushClock(0.016, 0.05, lambda: live[0])
    assert clock.window() == 0.016
    live[0] = 4
    assert math.isclose(clock.window(), 0.032)
    live[0] = 100
    assert clock.window() == 0.05
    live[0] = 0  # between replies
    assert clock.window() == 0.016


def test_replies_flush_on_shared_ticks_and_the_first_frame_at_once():
    clock = FlushClock(0.02, 0.02, lambda: 1)
    assert clock.next_flush(10.003, -math.inf) == 10.003  # first frame: now
    # Two replies whose tokens came at different moments flush at the same tick.
    a, b = clock.next_flush(10.0041, 10.003), clock.next_flush(10.0173, 10.001)
    assert math.isclose(a, 10.02) and math.isclose(b, 10.02)
    assert clock.next_flush(10.0201, 10.02) > 10.0201  # the next tick, not this one again
    assert FlushClock(0, 0, lambda: 5).next_flush(3.5, 3.0) == 3.5  # no window: at once


async def test_the_window_counts_the_replies_other_servers_stream():
    """On a shared store the replies of every server share the disk: the hub's window counts
    those the other servers' hints announce, until their final frame."""
    from jupyter_streamchat.core.hub import Hub
    from jupyter_streamchat.store import SQLiteStore
    from jupyter_streamchat.store.hints import ExchangeCreated, FramesCommitted

    hub = Hub(SQLiteStore(path=":memory:"), {}, batch_window=0.01, max_batch_window=0.05)
    alone = hub.clock.window()
    for i in range(25):
        hub.remote.hint(ExchangeCreated("u", f"c{i}", f"k{i}", f"um{i}", f"m{i}", "echo"))
    assert hub.remote.streaming_elsewhere == 25
    assert hub.clock.window() == 0.05 > alone
    for i in range(25):
        hub.remote.hint(FramesCommitted("u", f"c{i}", f"m{i}", 3, final=True))
    assert hub.remote.streaming_elsewhere == 0
    assert hub.clock.window() == alone
