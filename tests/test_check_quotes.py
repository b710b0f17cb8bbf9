"""benchmarks/check_quotes.py's matcher, on an inline text (tests never read the papers)."""

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("check_quotes", Path(__file__).resolve().parents[1] / "benchmarks" / "check_quotes.py")
check_quotes = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(check_quotes)

PAPER = {"000_dda0ebe99f4c033a.txt": "We  trained the model for 300 epochs, squishing min/max to $-1/1$,\n"
                                    "with the standard benchmark \u03a0 -model \u2014 and the end."}


def test_normalise_ignores_case_whitespace_dashes_and_latex_dollars():
    assert check_quotes.normalise("Squishing  MIN/max\nto $-1/1$") == "squishing min/max to-1/1"  # spaces around a dash go
    assert check_quotes.normalise("\u03a0 -model") == check_quotes.normalise("\u03c0\u2011model") == "\u03c0-model"


def test_misses_lists_only_attributed_quotes_absent_from_the_seed_paper():
    preset = check_quotes.yaml_comments(
        'lr: 0.1  # Sec. 3.1: "we trained the model for 300 epochs" and "squishing min/max to -1/1"\n'
        'x: 1     # "the standard benchmark \u03a0-model ... the end" [ok]\n'
        'y: 2     # "trained for 500 epochs at once"\n'
        'z: 3     # [O18 code] "a quote of another source entirely"\n'
        'w: "a quoted value # not a comment"  # "short" labels are skipped\n')
    checked, out = check_quotes.misses([("configs/experiment/imclr_x.yaml", preset), ("configs/other.yaml", preset)], PAPER)
    assert checked == 4  # the other source, the short label and the file with no seed paper are not checked
    assert out == ['configs/experiment/imclr_x.yaml:3: "trained for 500 epochs at once" not in 000_dda0ebe99f4c033a.txt']


def test_docstrings_keep_their_line_numbers():
    text = '"""Module.\n\n"a b c d"\n"""\nx = "not a docstring here at all"\n'
    assert check_quotes.docstrings(text).splitlines()[2] == '"a b c d"'
    assert "not a docstring" not in check_quotes.docstrings(text)
