"""The hub: replies, fan-out, delivery, the bus and the gate, with no Tornado and no jupyter_server.

Two hosts run it: :mod:`jupyter_streamchat.server` (the Jupyter server extension, over
WebSockets and REST) and :mod:`jupyter_streamchat.kernel` (a kernel or script with no server,
in-process).
"""
