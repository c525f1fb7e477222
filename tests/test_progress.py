"""Progress bars stay out of logs: under a non-terminal stderr (pytest's capture, CI, nohup) they are disabled."""
import sys

from t2arec_fast.progress import progress_bar


def test_bar_yields_every_item_and_is_silent_without_a_terminal(capsys):
    assert not sys.stderr.isatty()
    bar = progress_bar(range(5), "work", total=5)
    assert list(bar) == [0, 1, 2, 3, 4]
    assert bar.disable
    assert capsys.readouterr().err == ""
