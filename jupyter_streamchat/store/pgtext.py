"""Text as Postgres can hold it: a ``text`` value cannot contain NUL (U+0000), which a model's
output or a user's message (JSON's ``\\u0000``) may.

Every text the Postgres store writes goes through :func:`enc` and every text it reads through
:func:`dec`. NUL is written as U+FFFF followed by ``0``, and U+FFFF itself (a noncharacter: no
text a person writes holds one) as two of them. The mapping is character by character, so the
concatenation of encoded chunks is the encoding of the concatenated text (a reply's text is
put together in SQL), and a search for an encoded query finds exactly the encoded texts that
hold it. Text without either character, nearly all of it, is left as it is.
"""

from __future__ import annotations

import re

ESCAPE = "\uffff"
_ENCODED = re.compile(ESCAPE + "(.?)", re.DOTALL)


def enc(text: str) -> str:
    if "\x00" not in text and ESCAPE not in text:
        return text
    return text.replace(ESCAPE, ESCAPE + ESCAPE).replace("\x00", ESCAPE + "0")


def dec(text: str) -> str:
    if ESCAPE not in text:
        return text
    # A piece cut out of a text may end inside a pair: the lone escape is dropped.
    return _ENCODED.sub(lambda m: "\x00" if m.group(1) == "0" else m.group(1), text)


def dec_opt(text):
    return None if text is None else dec(text)
