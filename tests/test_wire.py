"""PHP-style query encoding used by Bitrix24 batch commands."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from syncd.connectors.crm.bitrix24.wire import php_query_decode, php_query_encode


def test_nested_filter_round_trips() -> None:
    params = {
        "filter": {">ID": 5, "@ANCHOR_ID": [1, 2, 3], ">DATE_MODIFY": "2026-01-01T00:00:00+02:00"},
        "select": ["ID", "TITLE"],
        "start": -1,
    }
    encoded = php_query_encode(params)
    assert "filter%5B%3EID%5D=5" in encoded
    assert php_query_decode(encoded) == {
        "filter": {
            ">ID": "5",
            "@ANCHOR_ID": ["1", "2", "3"],
            ">DATE_MODIFY": "2026-01-01T00:00:00+02:00",
        },
        "select": ["ID", "TITLE"],
        "start": "-1",
    }


keys = st.text(
    alphabet=st.characters(blacklist_characters="[]", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=8,
).filter(lambda k: not k.isdigit())
leaves = st.text(max_size=10)
trees = st.recursive(
    leaves,
    lambda c: (
        st.dictionaries(keys, c, min_size=1, max_size=3) | st.lists(c, min_size=1, max_size=3)
    ),
    max_leaves=10,
)


@given(st.dictionaries(keys, trees, min_size=1, max_size=4))
def test_encode_decode_round_trip(params: dict[str, object]) -> None:
    assert php_query_decode(php_query_encode(params)) == params
