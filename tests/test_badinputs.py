"""Every bad input of the corpus (tests/badinputs.py BAD_INPUTS) ends its command with the documented
exit code and one line naming the file, with no traceback and nothing half-written."""

import pytest

from bids_pscore.cli import run, train

from .badinputs import BAD_INPUTS
from .helpers import half_written

PROGRAMS = {"bids_pscore": run.main, "bids_pscore-train": train.main}


def files_under(folder):
    return {path.relative_to(folder) for path in folder.rglob("*")}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case.id for case in BAD_INPUTS])
def test_a_bad_input_ends_in_one_line_naming_it(case, tmp_path, capsys):
    program, *args = case.make(tmp_path)
    made = files_under(tmp_path)
    capsys.readouterr()
    code = PROGRAMS[program]([str(arg) for arg in args])
    out, err = capsys.readouterr()
    says = case.says.replace("{tmp}", str(tmp_path))
    assert code == case.exit_code, err + out
    assert "Traceback" not in out + err
    if case.starts:  # a session failed: its line in the run's summary, no derivative of it, no temporary file
        assert err == "" and says in out, out
        assert not list((tmp_path / "out").glob("sub-*/**/anat/*")) and not half_written(tmp_path)
    else:  # refused before it started: one line on stderr, and no folder or file made
        assert err.count("\n") == 1 and err.startswith(f"{program}: error: ") and says in err, err
        assert files_under(tmp_path) == made
