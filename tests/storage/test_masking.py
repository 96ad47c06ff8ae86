"""The masking engine: every detector positive and negative, styles, scoping, config errors."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import storage.masking
from storage.config_file import ConfigError
from storage.masking import (
    _FOLDS,
    _TRIGGERS,
    DETECTORS,
    FULL_VALUE,
    TOKEN_CACHE,
    Masker,
    MaskPolicy,
    Scan,
    Style,
    iban_ok,
    luhn_ok,
    make_token,
    prefilter_for,
)

SECRET = b"gateway-secret"
ALL_DETECTORS = [{"name": name, "detector": name} for name in DETECTORS]


@pytest.fixture(scope="module", autouse=True, params=["prefilter always", "prefilter never"])
def prefilter_mode(request):
    """Every test here runs twice: with the compiled prefilter on every text (however short),
    and never (each detector's own passes, the reference path)."""
    saved = storage.masking.PREFILTER_MIN
    storage.masking.PREFILTER_MIN = 0 if request.param == "prefilter always" else sys.maxsize
    yield request.param
    storage.masking.PREFILTER_MIN = saved


def masker(*rules: dict, groups=("dev",), target="db1", secret=SECRET):
    return MaskPolicy.from_config(list(rules), "gw.toml", secret).for_caller(groups, target)


def detect(detector: str, text: str, style: str = "full") -> str:
    return masker({"name": "r", "detector": detector, "style": style}).mask_text(text)[0]


# -- detectors -------------------------------------------------------------------------------

VALID_CARDS = [
    "4111111111111111",
    "5555555555554444",
    "378282246310005",
    "6011111111111117",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "3782 822463 10005",
]


@pytest.mark.parametrize("card", VALID_CARDS)
def test_credit_card_masks_luhn_valid_numbers(card):
    out = detect("credit_card", f"paid with {card} yesterday")
    assert out == f"paid with {'*' * len(card)} yesterday"


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn fails
        "1234567812345678",  # Luhn fails
        "order 12345678901234567890123",  # a run longer than any card
        "4111 1111-1111 1111",  # mixed separators: not one number
        "411111111111",  # too short
        "tel 0049 30 1234567",
    ],
)
def test_credit_card_leaves_random_digit_runs(text):
    assert not luhn_ok("1234567812345678")
    assert detect("credit_card", text) == text


def with_check_digit(prefix: str) -> str:
    return next(prefix + d for d in "0123456789" if luhn_ok(prefix + d))


def test_credit_card_needs_a_known_issuer_prefix():
    millis = with_check_digit("173255040012")  # a Luhn-valid 13-digit epoch in ms
    other = with_check_digit("912345678901234")
    assert detect("credit_card", f"ts={millis} id={other}") == f"ts={millis} id={other}"
    visa = with_check_digit("411111111111111")
    assert detect("credit_card", visa) == "*" * 16


def test_credit_card_keeps_a_following_expiry_date():
    assert detect("credit_card", "4111 1111 1111 1111 12/25") == "*" * 19 + " 12/25"
    assert detect("credit_card", "4111 1111 1111 1111 202", "last4") == "**** **** **** 1111 202"


@pytest.mark.parametrize(
    "iban",
    [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "FR1420041010050500013M02606",
        "DE89 3704 0044 0532 0130 00",
    ],
)
def test_iban_masks_valid_check_digits(iban):
    assert iban_ok(iban.replace(" ", ""))
    assert detect("iban", f"to {iban}, thanks") == f"to {'*' * len(iban)}, thanks"


@pytest.mark.parametrize(
    "text",
    ["GB83WEST12345698765432", "DE00370400440532013000", "XX89 3704", "de89370400440532013000"],
)
def test_iban_leaves_bad_check_digits(text):
    assert detect("iban", text) == text


def test_iban_grouped_followed_by_a_word():
    assert detect("iban", "DE89 3704 0044 0532 0130 00 EURO") == "*" * 27 + " EURO"


@pytest.mark.parametrize("email", ["alice@example.com", "Bob.Smith+tag@mail.example.co.uk"])
def test_email_masks_addresses(email):
    assert detect("email", f"<{email}>") == f"<{'*' * len(email)}>"


@pytest.mark.parametrize("text", ["root@localhost", "user@host:~$ ", "a @ b.com", "x@.com"])
def test_email_leaves_non_addresses(text):
    assert detect("email", text) == text


def test_us_ssn():
    assert detect("us_ssn", "ssn 123-45-6789.") == "ssn ***********."
    for bad in (
        "000-12-3456",
        "666-12-3456",
        "923-12-3456",
        "123-00-4567",
        "123-45-0000",
        "123456789",
        "1123-45-6789",
        "123-45-67890",
    ):
        assert detect("us_ssn", bad) == bad


JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def test_jwt():
    assert detect("jwt", f"Authorization: Bearer {JWT}\n") == (
        f"Authorization: Bearer {'*' * len(JWT)}\n"
    )
    for text in ("eyJhbGciOiJIUzI1NiJ9", "eyJ.eyJ.x", "abc.def.ghi"):
        assert detect("jwt", text) == text


def test_aws_access_key():
    assert detect("aws_access_key", "AKIAIOSFODNN7EXAMPLE") == "*" * 20
    assert detect("aws_access_key", "id=ASIAY34FZKBOKMUTVV7A;") == "id=" + "*" * 20 + ";"
    for text in (
        "AKIAIOSFODNN7EXAMPL",
        "AKIAIOSFODNN7EXAMPLEX",
        "AKIAiosfodnn7example",
        "XKIAIOSFODNN7EXAMPLE",
    ):
        assert detect("aws_access_key", text) == text


PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA7bq98f1\n"
    "b2FkZXJzLmNvbQ==\n"
    "-----END RSA PRIVATE KEY-----\n"
)


def test_pem_private_key_masks_the_body_keeps_the_lines():
    out, acts = masker({"name": "keys", "detector": "pem_private_key"}).mask_text("x\n" + PEM)
    assert out == (
        "x\n-----BEGIN RSA PRIVATE KEY-----\n"
        + "*" * 23
        + "\n"
        + "*" * 16
        + "\n-----END RSA PRIVATE KEY-----\n"
    )
    assert [a.rule for a in acts] == ["keys"]
    assert acts[0].length == len("\nMIIEowIBAAKCAQEA7bq98f1\nb2FkZXJzLmNvbQ==\n")


def test_pem_public_key_and_certificates_are_left():
    text = PEM.replace("RSA PRIVATE KEY", "CERTIFICATE")
    assert detect("pem_private_key", text) == text
    # an unterminated block is masked to the end of the text
    assert detect("pem_private_key", PEM[:60]) == PEM[:32] + "*" * 23 + "\n" + "*" * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("password=hunter2", "password=*******"),
        ('DB_PASSWORD: "s3cr et" ok', 'DB_PASSWORD: "*******" ok'),
        ("api_key = abc123;", "api_key = ******;"),
        ('{"token": "xyz", "user": "bob"}', '{"token": "***", "user": "bob"}'),
        ("secret:'p w'", "secret:'***'"),
        ("Password: ", "Password: "),
        ("passwords are long", "passwords are long"),
        ("user=bob", "user=bob"),
    ],
)
def test_password_assignment_masks_only_the_value(text, expected):
    assert detect("password_assignment", text) == expected


def test_custom_pattern():
    m = masker({"name": "emp", "pattern": r"EMP-\d{6}"})
    assert m.mask_text("id EMP-123456 and EMP-12") == (
        "id ********** and EMP-12",
        m.mask_text("id EMP-123456 and EMP-12")[1],
    )
    assert m.mask_text("id EMP-123456")[1][0].rule == "emp"


def test_every_detector_is_documented():
    assert all(d.description for d in DETECTORS.values())


# -- styles ----------------------------------------------------------------------------------


def test_last4_keeps_separators_and_short_values_are_masked_fully():
    assert detect("credit_card", "4111111111111111", "last4") == "************1111"
    m = masker({"name": "p", "pattern": r"K\d{5}", "style": "last4"})
    assert m.mask_text("K12345")[0] == "******"  # under 8 letters and digits


def test_token_is_stable_keyed_and_normalized():
    a = detect("credit_card", "4111 1111 1111 1111", "token")
    b = detect("credit_card", "4111-1111-1111-1111", "token")
    assert a == b == make_token(SECRET, "4111111111111111")
    assert a.startswith("tok_") and len(a) == 16
    other = masker({"name": "r", "detector": "credit_card", "style": "token"}, secret=b"other")
    assert other.mask_text("4111111111111111")[0] != a
    _, acts = masker({"name": "r", "detector": "email"}).mask_text("x Alice@Example.com")
    assert acts[0].token == make_token(SECRET, "alice@example.com")
    assert "Alice" not in repr(acts)


def test_acts_never_hold_the_value_and_point_at_the_replacement():
    m = masker({"name": "c", "detector": "credit_card"})
    out, acts = m.mask_text("a 4111111111111111 b 5555555555554444")
    assert [(a.position, a.length) for a in acts] == [(2, 16), (21, 16)]
    assert all(out[a.position : a.position + a.length] == "*" * 16 for a in acts)


def test_overlapping_rules_earliest_then_config_order():
    m = masker(
        {"name": "first", "pattern": r"4111\d+"}, {"name": "second", "detector": "credit_card"}
    )
    _, acts = m.mask_text("4111111111111111")
    assert [a.rule for a in acts] == ["first"]


# -- SQL values ------------------------------------------------------------------------------


def test_column_rules_mask_whole_values_with_a_fixed_mask():
    m = masker(
        {"name": "passwords", "column": "pass*"}, {"name": "cards", "detector": "credit_card"}
    )
    assert m.mask_value("password", "users", b"x") == (
        FULL_VALUE.encode(),
        m.mask_value("password", "users", b"x")[1],
    )
    value, act = m.mask_value("PASSWORD", None, "a much longer password")
    assert value == FULL_VALUE and act is not None and act.column == "PASSWORD"
    assert act.length == len("a much longer password")
    assert m.mask_value("password", "users", None) == (None, None)
    assert m.mask_value("note", "t", b"paid 4111111111111111") == (
        b"paid " + b"*" * 16,
        m.mask_value("note", "t", b"paid 4111111111111111")[1],
    )
    assert m.mask_value("note", "t", b"nothing") == (b"nothing", None)


def test_column_styles():
    m = masker(
        {"name": "l4", "column": "card", "style": "last4"},
        {"name": "tk", "column": "email", "style": "token"},
    )
    assert m.mask_value("card", None, "4111 1111 1111 1111")[0] == "**** **** **** 1111"
    assert m.mask_value("card", None, "123")[0] == FULL_VALUE
    assert m.mask_value("email", None, b"a@b.com")[0] == make_token(SECRET, "a@b.com").encode()


def test_tables_limit_a_column_rule_and_unknown_tables_fail_safe():
    m = masker({"name": "pw", "column": "secret", "tables": ["users", "admin_*"]})
    assert m.mask_value("secret", "users", "x")[1] is not None
    assert m.mask_value("secret", "admin_keys", "x")[1] is not None
    assert m.mask_value("secret", "public", "x") == ("x", None)
    assert m.mask_value("secret", None, "x")[1] is not None


def test_detector_limited_to_columns_does_not_touch_terminal_text():
    m = masker({"name": "mail", "column": "notes", "detector": "email"})
    assert m.mask_value("notes", None, "mail a@b.com")[0] == "mail *******"
    assert m.mask_value("other", None, "mail a@b.com")[0] == "mail a@b.com"
    assert m.mask_text("mail a@b.com")[0] == "mail a@b.com"
    assert not m.masks_text


def test_plan_masks_rows():
    m = masker({"name": "pw", "column": "password"}, {"name": "cards", "detector": "credit_card"})
    plan = m.plan(["id", "password", "note"])
    assert plan.active
    row, acts = plan.mask_row([b"1", b"hunter2", b"4111111111111111"])
    assert row == [b"1", FULL_VALUE.encode(), b"*" * 16]
    assert [a.rule for a in acts] == ["pw", "cards"]
    assert [a.column for a in acts] == ["password", "note"]
    assert plan.mask_row([b"2", None, None]) == ([b"2", None, None], [])
    assert not masker({"name": "pw", "column": "password"}).plan(["id"]).active
    quiet = m.plan(["id", "password", "note"], record=False)
    assert quiet.mask_row([b"1", b"hunter2", b"4111111111111111"]) == (
        [b"1", FULL_VALUE.encode(), b"*" * 16],
        [],
    )


def test_plan_without_acts_still_shows_tokens():
    m = masker({"name": "t", "column": "email", "style": "token"})
    assert m.plan(["email"], record=False).mask_row(["a@b.com"])[0] == [
        make_token(SECRET, "a@b.com")
    ]


# -- scoping ---------------------------------------------------------------------------------


def test_groups_and_except_groups_and_targets():
    policy = MaskPolicy.from_config(
        [
            {"name": "cards", "detector": "credit_card", "except_groups": ["auditors"]},
            {"name": "agents", "detector": "email", "groups": ["agents"]},
            {"name": "prod", "column": "ssn", "targets": ["prod-*"]},
        ],
        "gw.toml",
        SECRET,
    )
    text = "4111111111111111 a@b.com"
    assert policy.for_caller(["dev"], "x").mask_text(text)[0] == "*" * 16 + " a@b.com"
    assert policy.for_caller(["auditors"], "x").mask_text(text)[0] == text
    assert policy.for_caller(["agents"], "x").mask_text(text)[0] == "*" * 16 + " *******"
    assert (
        policy.for_caller(["agents", "auditors"], "x").mask_text(text)[0]
        == "4111111111111111 *******"
    )
    assert policy.for_caller([], "prod-db").mask_value("ssn", None, "1")[1] is not None
    assert policy.for_caller([], "dev-db").mask_value("ssn", None, "1")[1] is None


# -- configuration errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "key", "words"),
    [
        ([{"name": "bad", "pattern": "a(b"}], "masks #1 (bad).pattern", "not a valid regular"),
        ([{"name": "e", "pattern": "x*"}], "masks #1 (e).pattern", "empty string"),
        ([{"name": "u", "column": "a", "colour": 1}], "masks #1 (u).colour", "unknown key"),
        ([{"name": "d", "detector": "visa"}], "masks #1 (d).detector", "unknown detector"),
        ([{"column": "a"}], "masks #1.name", "missing"),
        ([{"name": "a b", "column": "a"}], "masks #1.name", "not a name"),
        (
            [{"name": "a", "column": "x"}, {"name": "a", "column": "y"}],
            "masks #2 (a).name",
            "unique",
        ),
        ([{"name": "b", "detector": "email", "pattern": "x"}], "masks #1 (b).pattern", "not both"),
        ([{"name": "n"}], "masks #1 (n).column", "needs"),
        (
            [{"name": "s", "column": "a", "style": "half"}],
            "masks #1 (s).style",
            "full, last4, token",
        ),
        ([{"name": "t", "detector": "email", "tables": ["x"]}], "masks #1 (t).tables", "column"),
        ([{"name": "g", "column": "a", "groups": [1]}], "masks #1 (g).groups", "list"),
        (["x"], "masks #1", "table"),
        ({"name": "x"}, "masks", "array"),
        (
            [{"name": "c", "column": "a"}, {"name": "c", "detector": "email"}],
            "masks #2 (c).name",
            "already used by mask #1",
        ),
    ],
)
def test_config_errors_name_the_rule_and_key(rules, key, words):
    with pytest.raises(ConfigError) as info:
        MaskPolicy.from_config(rules, "gw.toml", SECRET)
    assert info.value.key == key
    assert words in info.value.problem
    assert str(info.value).startswith("gw.toml: ")


def test_token_style_needs_a_secret():
    with pytest.raises(ConfigError, match="secret"):
        MaskPolicy.from_config([{"name": "t", "column": "a", "style": "token"}], "gw.toml", b"")
    assert MaskPolicy.from_config(None, "gw.toml").rules == ()
    assert (
        MaskPolicy.from_raw_config({"masks": [{"name": "a", "column": "x"}]}, "g", b"")
        .rules[0]
        .style
        is Style.FULL
    )


# -- escape sequences ------------------------------------------------------------------------


def test_escape_sequences_are_never_matched_into_or_across():
    m = masker({"name": "c", "detector": "credit_card"}, {"name": "m", "detector": "email"})
    coloured = "\x1b[31m4111111111111111\x1b[0m"
    assert m.mask_text(coloured)[0] == "\x1b[31m" + "*" * 16 + "\x1b[0m"
    title = "\x1b]0;alice@example.com\x07$ "
    assert m.mask_text(title)[0] == title
    custom = masker({"name": "k", "pattern": r"key-\S+"})
    assert custom.mask_text("key-abc\x1b[0m rest")[0] == "*******\x1b[0m rest"


# -- fast paths ------------------------------------------------------------------------------


def test_jwt_and_aws_are_found_after_decoys_and_not_inside_words():
    text = (
        f"xeyJ{JWT[3:]} eyJnot.a.token {JWT}; AKIA AAKIAIOSFODNN7EXAMPLE AKIAIOSFODNN7EXAMPL "
        "ASIAIOSFODNN7EXAMPLE."
    )
    got = masker(
        {"name": "jwt", "detector": "jwt"}, {"name": "aws", "detector": "aws_access_key"}
    ).mask_text(text)[0]
    assert got == (
        f"xeyJ{JWT[3:]} eyJnot.a.token {'*' * len(JWT)}; AKIA AAKIAIOSFODNN7EXAMPLE "
        f"AKIAIOSFODNN7EXAMPL {'*' * 20}."
    )


FAST_PIECES = st.lists(
    st.sampled_from(
        [
            *("a", "A", "K", "I", "3", "T", "S", "7", " ", ".", "_", "-", "=", ":", '"', "\n"),
            *("é", "eyJ", "AKIA", "A3T", "ASIA", "IOSFODNN7EXAMPLE", "hbGciOiJIUzI1NiJ9"),
            *("eyJzdWIi", "password", "Token", "api_key", "SECRET", "pwd", "key", "hunter2"),
            "\x1b[0m",
        ]
    ),
    max_size=40,
)


@settings(max_examples=400, deadline=None)
@given(FAST_PIECES, st.integers(min_value=0, max_value=50))
def test_literal_searches_find_what_the_plain_regex_finds(pieces, pos):
    """The detectors that look for a literal first (`eyJ`, `AKIA`..., the password keywords)
    give the same first match as searching with their regular expression."""
    text = "".join(pieces)
    pos = min(pos, len(text))
    for name in ("jwt", "aws_access_key", "password_assignment"):
        detector = DETECTORS[name]
        assert detector.search is not None
        fast = detector.search(detector.pattern, Scan(text), pos, len(text))
        slow = detector.pattern.search(text, pos)
        assert (fast and fast.span()) == (slow and slow.span()), (name, text, pos)


def test_tokens_are_cached_per_value_and_the_cache_is_bounded():
    m = masker({"name": "mail", "detector": "email", "style": "token"})
    first = m.mask_text("to Alice@Example.com and alice@example.com")
    assert first[0] == f"to {first[1][0].token} and {first[1][0].token}"
    assert first[1][0].token == make_token(SECRET, "alice@example.com")
    for index in range(TOKEN_CACHE + 10):
        value = f"user{index}@example.com"
        assert m.mask_text(value)[0] == make_token(SECRET, value)
    assert len(m._tokens) <= TOKEN_CACHE
    assert m.mask_text("alice@example.com")[0] == first[1][0].token
    other = masker({"name": "mail", "detector": "email", "style": "token"}, secret=b"other")
    assert other.mask_text("alice@example.com")[0] != first[1][0].token


def test_plans_are_cached_per_column_list_tables_and_record():
    m = masker(
        {"name": "pw", "column": "password", "tables": ["users"]},
        {"name": "mail", "detector": "email"},
    )
    first = m.plan(["id", "password"], ["users", "users"])
    assert m.plan(["id", "password"], ["users", "users"]) is first
    assert first.whole[1] is not None
    other = m.plan(["id", "password"], ["logs", "logs"])
    assert other.whole[1] is None and other.scan[1]
    assert m.plan(["id", "password"], ["users", "users"], record=False).record is False
    assert m.plan(["id", "password"]).whole[1] is not None  # unknown table: fails safe
    row, acts = m.plan(["id", "password"], ["users", "users"]).mask_row(["1", "hunter2"])
    assert row == ["1", FULL_VALUE] and len(acts) == 1


# -- the compiled prefilter --------------------------------------------------------------------


def test_the_prefilter_is_compiled_once_per_set_of_detectors():
    m = masker(*ALL_DETECTORS)
    assert m._prefilter is not None and m._prefilter.kinds == frozenset(_TRIGGERS)
    assert prefilter_for(reversed(list(DETECTORS))) is m._prefilter
    assert masker({"name": "mail", "detector": "email"})._prefilter is None  # `@`: str.find
    assert masker({"name": "k", "pattern": "x+"})._prefilter is None
    assert Masker(m.rules, SECRET, prefilter=False)._prefilter is None


def test_prefilter_candidates_are_where_matches_may_begin():
    prefilter = prefilter_for(_TRIGGERS)
    assert prefilter is not None
    text = (
        "é 4111111111111111 12345678901234567890 4111 1111 1111 1111 x3782-822463-10005 "
        "DE89370400440532013000 123-45-6789 eyJx AKIAIOSFODNN7EXAMPLE 5A3TX "
        "-----BEGIN RSA PRIVATE KEY----- DB_PassWord=x apikey TOKEN"
    )
    starts = prefilter.run(text)
    assert starts["credit_card"] == [
        text.index("4111111111111111"),
        text.index("1234567890"),  # a run of digits is one candidate, at its start
        text.index("4111 "),
        text.index("1111 1111 1111 x"),  # 13 characters of groups are enough to look closer
        text.index("3782"),
        text.index("89370400"),  # the IBAN's digits: the card pattern then rejects them
    ]
    assert starts["iban"] == [text.index("DE89")]
    assert starts["us_ssn"] == [text.index("123-45")]
    assert starts["jwt"] == [text.index("eyJx")]
    assert starts["aws_access_key"] == [text.index("AKIA")]  # 5A3T follows a digit
    assert starts["pem_private_key"] == [text.index("-----BEGIN")]
    assert starts["password_assignment"] == [
        text.index("KEY-----"),  # any case
        text.index("Pass"),
        text.index("key"),
        text.index("TOKEN"),
    ]
    assert prefilter.run("") == {} and prefilter.run("nothing here") == {}


def test_fold_characters_are_every_non_ascii_one_ignorecase_takes_for_ascii():
    letter = re.compile("(?i)[a-z]")
    found = {
        chr(code)
        for code in range(0x80, sys.maxunicode + 1)
        if not 0xD800 <= code <= 0xDFFF and letter.match(chr(code))
    }
    assert found == {"\u0130", "\u0131", "\u017f", "\u212a"}
    assert all(_FOLDS.match(char) for char in found)


@pytest.mark.parametrize(
    "text", ["pa\u017f\u017fword=hunter2", "api_\u212aey: hunter2", "x \u0130=1"]
)
def test_case_insensitive_keywords_with_non_ascii_case_forms(text):
    pattern = DETECTORS["password_assignment"].pattern
    m = masker({"name": "pw", "detector": "password_assignment"})
    hits = m.find(text)
    found = pattern.search(text)
    assert [(h.start, h.end) for h in hits] == ([found.span()] if found else [])
    if "hunter2" in text:
        assert "hunter2" not in m.mask_text(text)[0]


ADVERSARIAL = st.lists(
    st.sampled_from(
        [
            *("a", "A", "Z", "K", "I", "3", "T", "S", "0", "1", "4", "7", "9", " ", "-", "_"),
            *(".", "=", ":", '"', "'", "@", "\n", "\r\n", "\t", ";", ",", "&", "/", "?"),
            *("é", "漢", "\udc80", "\u017f", "\u212a", "\u0130", "\u0131", "\x1b[0m"),
            *("\x1b]0;a@b.example.org\x07", "\x1b[31m", "eyJ", "eyJzdWIi", "hbGciOiJIUzI1NiJ9"),
            *("AKIA", "A3T", "ASIA", "ACCA", "IOSFODNN7EXAMPLE", "2222", "DE89", "GB82"),
            *("3704 0044 0532 0130 00", "370400440532013000", "WEST12345698765432", "123-45"),
            *("-6789", "4111", "1111", " 1111", "-1111", "4111111111111111", "5555555555554444"),
            *("3782 822463 10005", "0000000000000", "-----BEGIN ", "RSA ", "PRIVATE KEY-----"),
            *("-----END PRIVATE KEY-----", "password", "PassWord", "pwd", "secret", "Token"),
            *("api_key", "apikey", "access-key", "KEY", "hunter2", "alice", "@example.com"),
            *("example.co.uk", "root@localhost"),
        ]
    ),
    max_size=60,
)


def _differential(text: str, pos: int) -> None:
    """The prefilter's candidates give exactly what each detector's own passes give, and what
    its plain regular expression gives; and the masker's hits are the same both ways."""
    prefilter = prefilter_for(_TRIGGERS)
    assert prefilter is not None
    endpos = len(text)
    for name in _TRIGGERS:
        detector = DETECTORS[name]
        assert detector.search is not None and detector.possible is not None
        fast = detector.search(detector.pattern, Scan(text, prefilter), pos, endpos)
        old = detector.search(detector.pattern, Scan(text), pos, endpos)
        plain = detector.pattern.search(text, pos, endpos)
        assert (fast and fast.span()) == (plain and plain.span()), (name, text, pos)
        assert (old and old.span()) == (plain and plain.span()), (name, text, pos)
        if plain is not None:  # "cannot match" is never said of a text that matches
            assert detector.possible(Scan(text, prefilter)), (name, text)
            assert detector.possible(Scan(text)), (name, text)
    with_prefilter = masker(*ALL_DETECTORS)
    without = Masker(with_prefilter.rules, SECRET, prefilter=False)
    saved = storage.masking.PREFILTER_MIN
    storage.masking.PREFILTER_MIN = 0
    try:
        fast_hits = with_prefilter.find(text, pos)
    finally:
        storage.masking.PREFILTER_MIN = saved
    old_hits = without.find(text, pos)
    assert [(h.start, h.end, h.vstart, h.vend, h.finder.rule.name) for h in fast_hits] == [
        (h.start, h.end, h.vstart, h.vend, h.finder.rule.name) for h in old_hits
    ], text


@settings(max_examples=600, deadline=None)
@given(ADVERSARIAL, st.integers(min_value=0, max_value=80))
def test_prefilter_finds_exactly_what_the_per_detector_passes_find(pieces, pos):
    text = "".join(pieces)
    _differential(text, min(pos, len(text)))


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=200), st.integers(0, 50))
def test_prefilter_on_random_text(text, pos):
    _differential(text, min(pos, len(text)))


@pytest.mark.parametrize(
    "text",
    [
        "1" * 5000 + " 4111111111111111",  # a long digit run is one candidate
        "key" * 2000 + " password=hunter2",
        "eyJ" * 1000 + " AKIA" * 500,
        "\u017f" + "x" * 300 + " passwd: abc",
        "-----BEGIN " * 100 + "PRIVATE KEY-----\nabc",
    ],
)
def test_prefilter_on_adversarial_long_text(text):
    _differential(text, 0)
    _differential(text, len(text) // 2)


# -- characters a terminal does not draw (issue 12, class 12) ---------------------------------


@pytest.mark.parametrize("gap", ["\x00", "\x00\x00", "\x01", "\x7f", "\u200b", "\u2060", "\ufeff"])
def test_invisible_characters_inside_a_card_do_not_hide_it(gap):
    m = masker({"name": "c", "detector": "credit_card", "style": "last4"})
    text = "card " + gap.join(["4111", "1111", "1111", "1111"]) + " ok"
    out, acts = m.mask_text(text)
    assert out == "card " + gap.join(["****", "****", "****", "1111"]) + " ok"
    plain = m.mask_text("card 4111111111111111 ok")[1]
    assert [act.token for act in acts] == [act.token for act in plain]  # the same card


def test_invisible_characters_inside_an_email_do_not_hide_it():
    out, _ = masker({"name": "e", "detector": "email"}).mask_text("to a\x00li\u200bce@example.org")
    assert "".join(c for c in out if c not in "\x00\u200b") == "to " + "*" * 17


def test_a_stream_masks_a_card_split_by_nuls_across_packets():
    from storage.mask_stream import MaskStream

    m = masker({"name": "c", "detector": "credit_card"})
    data = b"x 4111\x001111\x001111\x001111\x00 y\n"
    stream = MaskStream(m)
    out = b"".join(stream.feed(data[i : i + 1])[0] for i in range(len(data)))
    out += stream.flush(final=True)[0]
    assert out == b"x ****\x00****\x00****\x00****\x00 y\n"
