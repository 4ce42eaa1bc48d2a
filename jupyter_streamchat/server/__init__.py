"""The Jupyter server extension: the app, its REST and WebSocket handlers, around the hub in
:mod:`jupyter_streamchat.core`."""
