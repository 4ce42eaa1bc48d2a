"""jsonpieces: a huge answer made in pieces is exactly the text json.dumps makes."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_streamchat.server.jsonpieces import json_pieces

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, database=None)
@given(value=values, size=st.integers(1, 64))
def test_the_pieces_join_into_json_dumps(value, size):
    pieces = list(json_pieces(value, size))
    assert "".join(pieces) == json.dumps(value)


def test_a_long_string_is_cut_into_pieces_of_about_the_size():
    text = 'é😀"\\\n' * 100_000
    pieces = list(json_pieces({"messages": [{"text": text}]}, 4096))
    assert json.loads("".join(pieces)) == {"messages": [{"text": text}]}
    assert len(pieces) > 100
    # A slice escapes to at most 12 characters a character, after less than one piece held.
    assert max(map(len, pieces)) < 4096 * 13
