"""Progress bars stay out of logs: under a non-terminal stderr (pytest's capture, CI, nohup) they are disabled."""
import sys

from t2arec_fast.progress import progress_bar


def test_bar_yields_every_item_and_is_silent_without_a_terminal(capsys):
    assert not sys.stderr.isatty()
    bar = progress_bar(range(5), "work", total=5)
    assert list(bar) == [0, 1, 2, 3, 4]
    assert bar.disable
    assert capsys.readouterr().err == ""


def test_a_disabled_bar_still_iterates_and_takes_postfixes(capsys):
    """train.py's loop calls set_postfix on whatever _progress gave it, bar shown or not."""
    bar = progress_bar(range(3), "work", enabled=False)
    for _ in bar:
        bar.set_postfix({"loss": "1"}, refresh=False)
    assert bar.disable and capsys.readouterr().err == ""
