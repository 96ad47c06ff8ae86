"""The full-text index: a search is a phrase, never FTS5 syntax the searcher did not mean."""

from __future__ import annotations

import pytest

from storage.search import Entry, SearchIndex


@pytest.fixture
def index(tmp_path) -> SearchIndex:
    found = SearchIndex.in_data_dir(tmp_path)
    found.replace(
        "s1",
        [
            Entry(1_000, "output", "total 4 drwxr-xr-x root"),
            Entry(2_000, "sql_statement", 'sql: select "password" from users where id = 1'),
            Entry(3_000, "command", "command (shell): rm -rf /tmp/x"),
        ],
    )
    found.replace("s2", [Entry(5, "output", "rm is not rf")])
    return found


def test_words_are_found_as_a_phrase_in_order(index):
    (hit,) = index.search("rm -rf /tmp")
    assert (hit.session_id, hit.t_us, hit.kind) == ("s1", 3_000, "command")
    assert hit.context == "command (shell): [rm -rf /tmp]/x"


@pytest.mark.parametrize(
    "text", ['"password"', "NEAR(rm rf)", "rm OR root", "id*", "users:1", "- ( ) ^", 'a"b']
)
def test_fts_syntax_in_a_search_is_text_not_syntax(index, text):
    index.search(text)  # never an FTS5 syntax error
    assert index.search("rm OR root") == []  # OR is a word here, not an operator


def test_a_session_filter_and_reindexing_replace_not_add(index):
    assert [h.session_id for h in index.search("rm", sessions={"s2"})] == ["s2"]
    assert index.search("rm", sessions=set()) == []
    index.replace("s1", [Entry(9, "output", "new text")])
    assert [h.session_id for h in index.search("rm")] == ["s2"]
    assert index.indexed_sessions() == {"s1", "s2"}
    index.forget("s2")
    assert index.search("rm") == [] and index.indexed_sessions() == {"s1"}


def test_an_empty_search_is_refused(index):
    with pytest.raises(ValueError, match="what to search for"):
        index.search("   ")
