"""The kernel side: one connection per kernel to the server's hub (or a hub embedded in this
process when there is no server), notebook agents, and the ``%%chat`` magic. Imports
:mod:`jupyter_streamchat.core`, never :mod:`jupyter_streamchat.server`."""
