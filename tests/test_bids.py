"""Discovery with pybids, output names, and atomic writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bids_pscore import bids, fileio, tabular
from bids_pscore.derivatives import layout
from bids_pscore.errors import UsageError
from bids_pscore.fileio import atomic_path, write_json

from .helpers import half_written, killed_while_writing, make_bids, needs, small_image


@pytest.fixture
def dataset(tmp_path):
    return make_bids(tmp_path / "bids", {
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": small_image(),
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_T1w.nii.gz": small_image(),
        "sub-01/ses-2/anat/sub-01_ses-2_T2w.nii.gz": small_image(),
        "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii": small_image(),
        "sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz": small_image(),
        "sub-03/anat/sub-03_T1w.nii.gz": small_image(),
        # earlier outputs of this app inside the dataset must not be taken for inputs
        "derivatives/bids_pscore/sub-01/ses-1/anat/sub-01_ses-1_desc-preproc_T1w.nii.gz": small_image(),
    })  # fmt: skip


def relpaths(found):
    return [t.relpath for t in found]


def test_finds_every_t1w_with_its_entities(dataset):
    found = bids.find_t1w(bids.load_layout(dataset))
    assert relpaths(found) == [
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz",
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii",
        "sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz",
        "sub-03/anat/sub-03_T1w.nii.gz",
    ]
    fancy = found[1]
    assert fancy.entities == {"sub": "01", "ses": "2", "acq": "fast", "ce": "gad", "rec": "norm", "run": "02"}
    assert fancy.label == "sub-01 ses-2 acq-fast ce-gad rec-norm run-02"
    assert len({t.ident for t in found}) == len(found)


def test_selection_by_subject_session_and_filter(dataset):
    layout = bids.load_layout(dataset)
    assert relpaths(bids.find_t1w(layout, ["02", "03"])) == [
        "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii",
        "sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz",
        "sub-03/anat/sub-03_T1w.nii.gz",
    ]
    assert relpaths(bids.find_t1w(layout, ["01"], ["2"])) == ["sub-01/ses-2/anat/sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_T1w.nii.gz"]
    assert relpaths(bids.find_t1w(layout, None, None, {"run": 2})) == [
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_T1w.nii.gz",
        "sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz",
    ]


def test_output_names_keep_the_source_entities():
    entities = bids.source_entities("sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_T1w.nii.gz")
    paths = layout.session_outputs(entities, "MNI152NLin2009aSym", layout.PREPROCESSING)
    assert paths["t1w_grid"] == Path(
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_space-MNI152NLin2009aSym_res-1p5_desc-preproc_T1w.nii.gz"
    )
    assert paths["mask_native"] == Path("sub-01/ses-2/anat/sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_space-T1w_desc-brain_mask.nii.gz")
    assert paths["xfm_warp"].name == "sub-01_ses-2_acq-fast_ce-gad_rec-norm_run-02_from-T1w_to-MNI152NLin2009aSym_mode-image_desc-warp_xfm.nii.gz"
    assert layout.sidecar_path(paths["xfm_warp"]).name.endswith("_desc-warp_xfm.json")
    no_session = layout.session_outputs(bids.source_entities("sub-03_T1w.nii.gz"), "X", layout.PREPROCESSING)
    assert no_session["mask_grid"] == Path("sub-03/anat/sub-03_space-X_res-1p5_desc-brain_mask.nii.gz")


@pytest.mark.parametrize("given,clean", [("sub-01", "01"), ("01", "01"), ("ABC123", "ABC123")])
def test_clean_label(given, clean):
    assert bids.clean_label(given, "sub") == clean


@pytest.mark.parametrize("given", ["sub-", "0_1", "../x", "a/b", "x y", "sub-01-02"])
def test_clean_label_refuses(given):
    with pytest.raises(UsageError):
        bids.clean_label(given, "sub")


def test_a_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "table.tsv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half a ta")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []
    write_json(target.with_suffix(".json"), {"a": 1})
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["table.json"]


def test_a_run_removes_what_killed_writers_left_and_keeps_what_is_being_written(tmp_path):
    def left_by_a_killed_writer(name, host=fileio.HOST):
        code = killed_while_writing(f"fileio.HOST = {host!r}\nfileio.write_text({str(tmp_path / name)!r}, 'x')")
        assert subprocess.run([sys.executable, "-c", code]).returncode == -signal.SIGKILL
        (left,) = [p for p in half_written(tmp_path) if p.name.endswith(name)]
        return left

    dead_here = left_by_a_killed_writer("a.json")
    fresh_elsewhere = left_by_a_killed_writer("b.json", host="elsewhere")  # its writer may still run
    old_elsewhere = left_by_a_killed_writer("c.json", host="elsewhere")
    long_ago = time.time() - fileio.STALE_AFTER_S - 60
    os.utime(old_elsewhere, (long_ago, long_ago))
    (tmp_path / ".DS_Store").write_text("not ours")
    with atomic_path(tmp_path / "d.json") as being_written:  # by this process, which runs
        being_written.write_text("d")
        assert fileio.remove_stale_temporaries(tmp_path) == 2
        assert not dead_here.exists() and not old_elsewhere.exists()
        assert sorted(half_written(tmp_path)) == sorted([fresh_elsewhere, being_written, tmp_path / ".DS_Store"])
    assert (tmp_path / "d.json").read_text() == "d"


@pytest.mark.parametrize("umask, mode", [(0o077, 0o600), (0o022, 0o644)])
def test_an_output_gets_the_mode_the_umask_gives_and_its_content_is_synced(tmp_path, monkeypatch, umask, mode):
    import os

    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append((os.fstat(fd).st_size, target.exists())))
    target = tmp_path / "sub-01_summary.json"
    previous = os.umask(umask)
    try:
        write_json(target, {"a": 1})
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == mode
    assert synced == [(target.stat().st_size, False)]  # its data, before the rename


def test_writing_the_same_bytes_again_leaves_the_file_and_its_time_untouched(tmp_path):
    target = tmp_path / "sub-01_T1w.json"
    write_json(target, {"a": 1})
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    before = target.stat()
    write_json(target, {"a": 1})
    assert (target.stat().st_ino, target.stat().st_mtime_ns) == (before.st_ino, 1_000_000_000) and not half_written(tmp_path)
    write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2} and target.stat().st_mtime_ns != 1_000_000_000


def test_a_full_disk_while_drawing_a_figure_names_the_file_and_leaves_nothing(tmp_path, monkeypatch):
    import errno

    import matplotlib.figure

    from bids_pscore import viz
    from bids_pscore.errors import EXIT_OUTPUT_NOT_WRITABLE, OutputNotWritableError

    def fails_with(code, message):
        def savefig(fig, fname, **kwargs):
            Path(fname).write_bytes(b"\x89PNG half")
            raise OSError(code, message)

        return savefig

    fills_the_disk = fails_with(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fills_the_disk)
    target = tmp_path / "figures" / "sub-01_desc-regions_pscore.png"
    with pytest.raises(OutputNotWritableError, match=r"sub-01_desc-regions_pscore.png: cannot be written \(No space left") as caught:
        viz.ranked_bars(target, ["A", "B"], [0.2, 0.9], "P-score")
    assert caught.value.exit_code == EXIT_OUTPUT_NOT_WRITABLE
    assert list(target.parent.iterdir()) == []
    # an error that is not the user's to fix stays what it is
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", fails_with(errno.EIO, "I/O error"))
    with pytest.raises(OSError, match="I/O error"):
        viz.ranked_bars(target, ["A", "B"], [0.2, 0.9], "P-score")


def test_every_t1w_like_file_left_out_is_listed_with_why(dataset, tmp_path, capsys):
    from bids_pscore.participant import check_inputs

    misplaced = {
        "sub-04/sub-04_T1w.nii.gz": "not in an anat/ folder",
        "sub-01/ses-1/anat/sub-02_ses-1_T1w.nii.gz": "do not match its folders",
        "sub-03/anat/sub-03_t1w.nii.gz": "suffix is not _T1w",
        "sub-03/anat/sub-03_run-x_1_T1w.nii.gz": "not valid BIDS",
        "T1w.nii.gz": "outside any sub-<label> folder",
    }
    make_bids(dataset, {path: small_image() for path in misplaced}, description=False)
    layout = bids.load_layout(dataset)
    selected = bids.find_t1w(layout, ["01"])
    unused = dict(bids.unused_t1w(dataset, {t.relpath for t in selected}, bids.indexed_t1w(layout)))
    # the T2w and the app's own earlier outputs under derivatives/ are not T1w inputs
    assert set(unused) == set(misplaced) | {
        "sub-02/ses-1/anat/sub-02_ses-1_run-1_T1w.nii", "sub-02/ses-1/anat/sub-02_ses-1_run-2_T1w.nii.gz", "sub-03/anat/sub-03_T1w.nii.gz",
    }  # fmt: skip
    for path, why in misplaced.items():
        assert why in unused[path], (path, unused[path])
    assert unused["sub-03/anat/sub-03_T1w.nii.gz"].startswith("not selected")
    check_inputs(layout, selected, skip_validation=True)
    text = capsys.readouterr().out
    assert "3 other T1w not selected" in text and "5 T1w-like file(s) will not be processed" in text
    assert all(f"  {path}: " in text for path in misplaced)


def test_the_bids_validator_refuses_a_dataset_with_errors_naming_them(dataset):
    from bids_pscore.errors import NotBIDSError
    from bids_pscore.participant import check_inputs

    needs(bids.validator_command() is not None, "bids-validator-deno is not installed (pip install -e '.[test]')")
    layout = bids.load_layout(dataset)
    selected = bids.find_t1w(layout, ["03"])
    check_inputs(layout, selected, skip_validation=False)  # a valid dataset passes
    (dataset / "participants.tsv").write_text("participant_id\tage\nsub-03\tforty\n")
    (dataset / "participants.json").write_text('{"age": {"Description": "age", "Units": "year"}}')
    with pytest.raises(NotBIDSError) as error:
        check_inputs(layout, selected, skip_validation=False)
    message = str(error.value)
    assert "TSV_VALUE_INCORRECT_TYPE /participants.tsv" in message and "--skip-bids-validation" in message and "\n" not in message


def test_a_stored_index_is_reused_and_never_taken_for_another_dataset(dataset, tmp_path):
    import subprocess
    import sys

    from bids_pscore.errors import UsageError

    database = tmp_path / "index"
    # jobs that start together each build the index aside; one is kept, none is read half-written
    code = f"from bids_pscore import bids; print(len(bids.find_t1w(bids.load_layout({str(dataset)!r}, database_dir={str(database)!r}))))"
    jobs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    assert [job.communicate()[0].strip() for job in jobs] == ["5"] * 3 and all(job.returncode == 0 for job in jobs)
    assert [p.name for p in database.iterdir()] == ["validated"]
    first = bids.load_layout(dataset, database_dir=database)
    assert relpaths(bids.find_t1w(first)) and list(database.rglob("*.sqlite"))
    # a file added later is not seen: the second job reads the stored index instead of walking the dataset
    make_bids(dataset, {"sub-05/anat/sub-05_T1w.nii.gz": small_image()}, description=False)
    again = bids.load_layout(dataset, database_dir=database)
    assert relpaths(bids.find_t1w(again)) == relpaths(bids.find_t1w(first))
    other = make_bids(tmp_path / "other", {"sub-09/anat/sub-09_T1w.nii.gz": small_image()})
    with pytest.raises(UsageError, match="holds the index of"):
        bids.load_layout(other, database_dir=database)


def test_a_label_with_a_space_is_left_out_and_named_not_a_crash(tmp_path):
    root = make_bids(tmp_path / "bids", {
        "sub-01/ses-a b/anat/sub-01_ses-a b_T1w.nii.gz": small_image(),
        "sub-02/anat/sub-02_T1w.nii.gz": small_image(),
    })  # fmt: skip
    layout = bids.load_layout(root, validate=False)
    assert [t.relpath for t in bids.find_t1w(layout)] == ["sub-02/anat/sub-02_T1w.nii.gz"]
    unused = bids.unused_t1w(root, {"sub-02/anat/sub-02_T1w.nii.gz"}, bids.indexed_t1w(layout))
    assert unused == [
        (
            "sub-01/ses-a b/anat/sub-01_ses-a b_T1w.nii.gz",
            "its label 'ses-a b' holds characters other than letters and digits; rename the folder and the file",
        )
    ]
    assert bids.invalid_label("sub-01/ses-1/anat/sub-01_ses-1_acq-mprage_run-2_T1w.nii.gz") is None


def test_t1w_told_apart_by_any_entity_bids_allows_get_apart_outputs_node_names_and_filters(tmp_path):
    from bidsschematools.schema import load_schema

    from bids_pscore.model.preprocessing import PreprocParams
    from bids_pscore.preprocess.workflow import init_participant_wf

    # two echoes of a MEMPRAGE, two tasks, the magnitude and phase parts, two chunks
    pairs = {"echo": ("1", "2"), "task": ("rest", "motor"), "part": ("mag", "phase"), "chunk": ("1", "2")}
    root = make_bids(tmp_path / "bids", {f"sub-0{i}/anat/sub-0{i}_{key}-{value}_T1w.nii.gz": small_image()
                                         for i, (key, values) in enumerate(pairs.items(), 1) for value in values})  # fmt: skip
    found = bids.find_t1w(bids.load_layout(root))
    assert len(found) == 8
    assert len({t.ident for t in found}) == len({t.label for t in found}) == 8
    for key in layout.SESSION_OUTPUTS:
        assert len({layout.output_path(t.entities, key, "X") for t in found}) == 8
    # one workflow holds them all: nipype refused a second node of the same name
    wf = init_participant_wf(found, tmp_path / "out", PreprocParams(), {"template": "t.nii.gz", "coarse_template": "c.nii.gz"}, "wf")
    assert len([n for n in wf._graph.nodes() if n.name.endswith("_sink")]) == 8
    bids_layout = bids.load_layout(root)
    assert relpaths(bids.find_t1w(bids_layout, filters={"echo": 2})) == ["sub-01/anat/sub-01_echo-2_T1w.nii.gz"]
    assert relpaths(bids.find_t1w(bids_layout, filters={"part": "phase"})) == ["sub-03/anat/sub-03_part-phase_T1w.nii.gz"]
    # every entity that BIDS allows on a T1w, in BIDS order, and the output names keep BIDS order: chunk follows space
    schema = load_schema()
    rule = schema.rules.files.raw.anat.nonparametric
    assert "T1w" in rule.suffixes
    assert bids.SOURCE_ENTITIES == tuple(schema.objects.entities[e].name for e in schema.rules.entities if e in rule.entities)
    entities = bids.source_entities("sub-01_ses-1_task-a_acq-b_ce-c_rec-d_run-1_echo-2_part-mag_chunk-3_T1w.nii.gz")
    assert list(entities) == ["sub", "ses", "task", "acq", "ce", "rec", "run", "echo", "part", "chunk"]
    assert layout.session_outputs(entities, "X", layout.PREPROCESSING)["t1w_grid"].name == (
        "sub-01_ses-1_task-a_acq-b_ce-c_rec-d_run-1_echo-2_part-mag_space-X_chunk-3_res-1p5_desc-preproc_T1w.nii.gz"
    )


def test_templates_and_derivatives_are_never_taken_for_raw_t1w_and_each_is_named(tmp_path, capsys):
    from bids_pscore.errors import NoT1wError, NothingSelectedError
    from bids_pscore.participant import check_inputs

    not_raw = {
        # a BIDS 1.11 atlas dataset's template images at the root (they ended a run in KeyError: 'sub')
        "tpl-MNI152NLin2009cAsym/anat/tpl-MNI152NLin2009cAsym_T1w.nii.gz": "template's image",
        "tpl-MNI152NLin2009cAsym/anat/tpl-MNI152NLin2009cAsym_res-1_T1w.nii.gz": "template's image",
        # fMRIPrep's outputs copied beside the raw images (they ended a run in 'Duplicate node name')
        "sub-01/anat/sub-01_desc-preproc_T1w.nii.gz": "its desc- are not allowed on a raw T1w",
        "sub-01/anat/sub-01_space-MNI152NLin2009cAsym_desc-preproc_T1w.nii.gz": "its space- desc- are not allowed on a raw T1w",
        "sub-02/anat/sub-02_desc-preproc_T1w.nii.gz": "its desc- are not allowed",
    }
    root = make_bids(tmp_path / "bids", {"sub-01/anat/sub-01_T1w.nii.gz": small_image(), **dict.fromkeys(not_raw, small_image())})
    layout = bids.load_layout(root, validate=False)  # --skip-bids-validation: pybids indexes them all
    found = bids.find_t1w(layout)
    assert relpaths(found) == ["sub-01/anat/sub-01_T1w.nii.gz"]
    check_inputs(layout, found, skip_validation=True)
    lines = capsys.readouterr().out.splitlines()
    assert "5 T1w-like file(s) will not be processed:" in lines[0]
    for path, why in not_raw.items():
        assert sum(f"  {path}: " in line and why in line for line in lines) == 1, path
    with pytest.raises(NothingSelectedError, match=r"no selected T1w can be taken \(e.g. sub-02/anat/sub-02_desc-preproc_T1w.nii.gz: its desc-"):
        bids.find_t1w(layout, ["02"])
    # a dataset of templates only, or of derivatives that do not say so: no raw T1w, one line with the fix
    for files in (list(not_raw)[:2], list(not_raw)[2:]):
        other = make_bids(tmp_path / files[0].split("/")[0] / "bids", dict.fromkeys(files, small_image()))
        with pytest.raises(NoT1wError, match=r"contains no raw T1w .*; give the raw BIDS dataset$") as error:
            bids.find_t1w(bids.load_layout(other, validate=False))
        assert "\n" not in str(error.value)


def test_age_and_sex_come_from_participants_tsv_and_a_gender_column_is_read_as_the_sex(tmp_path, caplog):
    root = make_bids(tmp_path / "bids", {
        "participants.tsv": "participant_id\tage\tgender\nsub-01\t39\tm\nsub-02\tn/a\tf\n",
        "sub-01/anat/sub-01_T1w.nii.gz": small_image(), "sub-02/anat/sub-02_T1w.nii.gz": small_image(),
    })  # fmt: skip
    t1w = sorted(bids.find_t1w(bids.load_layout(root, validate=False)), key=lambda t: t.entities["sub"])
    ages, sexes = tabular.ages_and_sexes(root, t1w)
    assert ages[0] == 39 and np.isnan(ages[1]) and sexes == ["m", "f"]
    assert "participants.tsv: no 'sex' column, so the sex is read from its 'gender' column" in caplog.text
    # a dataset with both: BIDS's own column, and nothing to tell
    (root / "participants.tsv").write_text("participant_id\tsex\tgender\nsub-01\tF\tm\nsub-02\tM\tf\n")
    caplog.clear()
    assert tabular.ages_and_sexes(root, t1w)[1] == ["F", "M"] and "gender" not in caplog.text
