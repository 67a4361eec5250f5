"""People's names (edge/enrolment/names.py): one rule for a stick's manifest and `edge enrol --name`."""

import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from edge.enrolment.names import MAX_NAME_CHARS, BadName, check_name, name_key, same_person, shown

REPO = Path(__file__).resolve().parents[1]
NFC = "Jos\u00e9"
NFD = "Jose\u0301"


@pytest.mark.parametrize("name", ["Barack Obama", "Zoë O'Brien", "Анна Каренина", "李小龍", "अनुष्का शर्मा",
                                  "Nguyễn Thị Minh Khai", "Jean-Luc Picard", "x" * MAX_NAME_CHARS])
def test_real_names_are_accepted_as_they_are(name):
    assert check_name(name) == unicodedata.normalize("NFC", name)


def test_names_are_normalised_to_nfc():
    assert NFC != NFD and check_name(NFD) == NFC and check_name(NFC) == NFC
    # the length counts the normalised name: 64 decomposed é are 64 characters
    assert check_name("e\u0301" * MAX_NAME_CHARS) == "\u00e9" * MAX_NAME_CHARS


@pytest.mark.parametrize("name, words", [
    ("Ada\rLovelace", "control characters: U+000D"),
    ("Ada\x1b[2J", "control characters: U+001B"),
    ("Ada\x85", "control characters: U+0085"),            # C1: NEXT LINE
    ("Ada\x9b31m", "control characters: U+009B"),         # C1: CSI
    ("Ada\x00", "control characters"),
    ("Ada\x7f", "control characters"),
    ("Ada\u2028Lovelace", "line separator: U+2028"),       # a fake line in report.txt
    ("Ada\u2029", "paragraph separator"),
    ("Barack\u200b Obama", "U+200B ZERO WIDTH SPACE"),      # a second "Barack Obama"
    ("\u202eamabO kcaraB", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("Ada\u2066x\u2069", "U+2066"),                        # bidirectional isolate
    ("Ada\u00adLovelace", "U+00AD SOFT HYPHEN"),
    ("Ada\ufeff", "U+FEFF"),
    ("Ada\u200dLovelace", "ZERO WIDTH JOINER"),
    ("Ada\U000e0041", "U+E0041"),                          # a tag character
    ("Ada\u3164", "invisible character: U+3164"),          # Hangul filler (a letter, but blank)
    ("Ada\u2800", "invisible character"),                  # blank Braille pattern
    ("Ada\ufe0f", "invisible character"),                  # variation selector
    ("Ada\u034fLovelace", "invisible character"),          # combining grapheme joiner
    ("Ada\u00a0Lovelace", "space other than a plain space: U+00A0"),
    ("Ada\u3000Lovelace", "space other than a plain space"),
    ("Ada\ue000", "private-use"),
    ("Ada\udcff", "surrogate"),                            # undecodable bytes in argv
    ("Ada\U0010fffe", "U+10FFFE"),                         # a noncharacter (unassigned)
    ("Ada  Lovelace", "two spaces in a row"),
    (" Ada", "no leading or trailing spaces"),
    ("Ada ", "no leading or trailing spaces"),
    ("", "1..64 characters"),
    ("x" * 65, "1..64 characters"),
    ("x" * 300, "(300 characters)"),
    ("\u0301Ada", "starts with a combining mark"),
    ("Za\u0301\u0302\u0303\u0304\u0305\u0306lgo", "more than 4 combining marks in a row"),
])
def test_names_that_hide_what_they_are_are_refused(name, words):
    with pytest.raises(BadName) as exc:
        check_name(name)
    msg = str(exc.value)
    assert words in msg and msg.isprintable() and len(msg) < 200, msg


def test_a_name_must_be_a_string():
    with pytest.raises(BadName, match="name must be a string, got 42"):
        check_name(42)
    with pytest.raises(BadName, match=r"--name must be a string, got \['xxx.*\.\.\.$"):
        check_name(["x" * 10_000], "--name")


def test_names_compare_case_width_and_form_folded():
    assert name_key(NFC) == name_key(NFD) == name_key("JOSÉ") == name_key("ｊｏｓé")
    assert name_key("Straße") == name_key("STRASSE")
    assert name_key("José") != name_key("Jose")           # an accent is not a case
    assert name_key("Barack\u200b Obama") == name_key("Barack Obama")   # older galleries
    assert same_person(["Barack Obama", "Barack\u200b Obama", "Michelle Obama", NFD], "barack obama") == [
        "Barack Obama", "Barack\u200b Obama"]
    assert same_person([NFD, "Joe"], NFC) == [NFD]


def test_stored_names_are_shown_on_one_line():
    assert shown("José") == "José"
    assert shown("Ada\u2028Lovelace") == "Ada\\u2028Lovelace"
    assert shown("Ada\r\x1b") == "Ada\\x0d\\x1b"
    assert len(shown("x" * 10_000)) < 100


@pytest.mark.parametrize("name, words", [
    ("Ada\rLovelace", "control characters: U+000D"),
    ("Ada\x1b[2J", "control characters: U+001B"),
    ("x" * 300, "(300 characters)"),
    ("Ada\u2028Lovelace", "line separator"),
])
def test_edge_enrol_name_follows_the_same_rule(name, words):
    """`edge enrol --name` accepted CR, ESC and 300-character names; now they are refused
    with one line and status 2, before any model is loaded."""
    r = subprocess.run([sys.executable, "-m", "edge", "enrol", "--name", name, "--photo", "/nonexistent.jpg",
                        "--gallery", "/nonexistent/gallery.npz"],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: bad --name ") and words in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and "\r" not in r.stderr and "\x1b" not in r.stderr
