"""``python -m jupyter_streamchat.cli``, the same as ``jupyter streamchat``."""

from . import run

run()
