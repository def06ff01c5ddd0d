"""`sftlib predict --file`: exactly one text per line, whatever characters the texts hold."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sftlib.__main__ import read_text_lines

# str.splitlines() splits at every one of these; a text may hold any of them
SEPARATORS = "\u2028\u2029\x85\x0b\x0c\x1c\x1d\x1e\r"


def test_only_newline_ends_a_line(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("one\u2028still one\r\ntwo\x85\x0c\x1c\n\n   \nthree\rtoo\nfour".encode())
    assert read_text_lines(path) == (["one\u2028still one", "two\x85\x0c\x1c", "three\rtoo",
                                      "four"], 2)


def test_bom_crlf_and_final_newline(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes(b"\xef\xbb\xbfa\r\nb\r\n")
    assert read_text_lines(path) == (["a", "b"], 0)
    path.write_bytes(b"")
    assert read_text_lines(path) == ([], 0)


def test_bad_files_are_one_line_naming_the_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(ValueError, match=rf"--file {path}: not UTF-8 text \(byte 0xe9 on line "
                                         r"2\); save it as UTF-8"):
        read_text_lines(path)
    with pytest.raises(ValueError, match=r"missing.txt: cannot read it \(No such file"):
        read_text_lines(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match=r"cannot read it \(Is a directory\)"):
        read_text_lines(tmp_path)


def test_cli_bad_file_is_one_line_before_any_model_loads(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9\n")
    result = subprocess.run([sys.executable, "-m", "sftlib", "predict", "--model",
                             str(tmp_path / "no-model"), "--file", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr == f"sftlib: --file {path}: not UTF-8 text (byte 0xe9 on line 1); " \
                            "save it as UTF-8\n"


text = st.text(st.characters(blacklist_characters="\n\ufeff", blacklist_categories=("Cs",))
               | st.sampled_from(SEPARATORS), min_size=1) \
    .filter(lambda t: t.strip() and not t.endswith("\r"))


@settings(max_examples=200, deadline=None, database=None)
@given(texts=st.lists(text, min_size=1, max_size=20), crlf=st.booleans(),
       final_newline=st.booleans())
def test_one_text_per_line_whatever_the_texts_hold(tmp_path_factory, texts, crlf, final_newline):
    path = tmp_path_factory.mktemp("lines") / "texts.txt"
    end = "\r\n" if crlf else "\n"
    path.write_bytes((end.join(texts) + (end if final_newline else "")).encode("utf-8"))
    assert read_text_lines(path) == (texts, 0)
