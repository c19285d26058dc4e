"""The quick start's demo: two shipped IXI heads, their licence, the rule that picked them, the
dataset bids_pscore-synth makes from them, and (slow) the quick start run on it checked against its truth."""

import filecmp
import json
import re
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from bids_pscore import bids
from bids_pscore.atlas import region_table
from bids_pscore.cli import run as cli
from bids_pscore.cli import synth as synth_cli
from bids_pscore.derivatives import layout
from bids_pscore.synth import GROUNDTRUTH
from bids_pscore.synth.demo import DEMO_COURSE, DEMO_HEADS, demo_labels, held_out_labels, validation_labels
from bids_pscore.synth.truth import ATROPHIED_FROM, read_truth

from .helpers import SHARED_DATA, needs

IXI = SHARED_DATA / "ixi_hh"
README = Path(__file__).resolve().parents[1] / "README.md"
NUMBER = r"\d+(?:\.\d+)?"


def numbers_of(line):
    return re.findall(NUMBER, line)


def words_of(line):
    return re.sub(NUMBER, "#", line)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "bids"
    assert synth_cli.main([str(out)]) == 0
    return out


def test_demo_heads_carry_their_licence_and_credit_ixi():
    licence = (DEMO_HEADS / "LICENSE.md").read_text()
    assert "IXI" in licence and "CC BY-SA 3.0" in licence and "brain-development.org" in licence and "What was changed" in licence
    heads = pd.read_csv(DEMO_HEADS / "heads.tsv", sep="\t")
    for name in (*heads["t1w"], *heads["prepared"]):
        assert (DEMO_HEADS / name).is_file() and name.split("_")[0] in licence
    # what ships is small: two 2 mm heads and what prepare_base found on them
    assert sum(p.stat().st_size for p in DEMO_HEADS.iterdir()) <= 3 * 1024**2


def test_demo_heads_are_those_the_rule_picks(shared_data):
    heads = pd.read_csv(DEMO_HEADS / "heads.tsv", sep="\t").set_index("participant_id")
    assert heads["source"].tolist() == ["sub-IXI313", "sub-IXI438"] and heads["group"].tolist() == ["AD", "CN"]
    needs((IXI / "participants.tsv").is_file(), f"{IXI} is not there: the rule is not recomputed")
    # recomputed from the base: held out of the demo model's training, not used by the validation benchmark, aged 60 or more
    labels = sorted(pd.read_csv(IXI / "participants.tsv", sep="\t")["participant_id"].str.removeprefix("sub-"))
    picked = demo_labels(IXI)
    assert [f"sub-{label}" for label in picked] == heads["source"].tolist()
    held_out = held_out_labels(IXI)
    assert held_out == labels[3::4] and set(picked) <= set(held_out) and not set(picked) & set(validation_labels(IXI))
    ages = pd.read_csv(IXI / "participants.tsv", sep="\t").set_index("participant_id")["age"]
    skipped = held_out[len(held_out) // 2 : held_out.index(picked[1])]
    assert all(ages[f"sub-{label}"] < 60 for label in skipped if label not in picked) and (ages[heads["source"]] >= 60).all()
    for head in heads.itertuples():
        assert filecmp.cmp(DEMO_HEADS / head.t1w, IXI / head.source / "anat" / f"{head.source}_T1w.nii.gz", shallow=False)


@pytest.mark.slow
def test_demo_dataset_has_an_atrophied_and_a_healthy_subject_with_two_visits_and_their_truth(demo):
    t1w = bids.find_t1w(bids.load_layout(demo, validate=True))
    sessions = sorted((f"sub-{t.entities['sub']}", f"ses-{t.entities['ses']}") for t in t1w)
    assert sessions == [("sub-01", "ses-1"), ("sub-01", "ses-2"), ("sub-02", "ses-1"), ("sub-02", "ses-2")]
    participants = pd.read_csv(demo / "participants.tsv", sep="\t").set_index("participant_id")
    assert participants["group"].to_dict() == {"sub-01": "AD", "sub-02": "CN"}
    for sub in ("sub-01", "sub-02"):
        times = pd.to_datetime(pd.read_csv(demo / sub / f"{sub}_sessions.tsv", sep="\t")["acq_time"])
        assert 0.8 <= (times.iloc[1] - times.iloc[0]).days / 365.25 <= 1.3
    truth = read_truth(demo)
    assert sorted(truth) == sessions
    first, second = truth[("sub-01", "ses-1")], truth[("sub-01", "ses-2")]
    assert first.group == "AD" and first.subtype == DEMO_COURSE["subtype"] and first.stage == DEMO_COURSE["stage0"] and second.stage > first.stage
    # the stated stage: several regions have lost 20-40%, none more; the healthy subject lost no region's 10%
    assert ((first.loss >= 0.2) & (first.loss <= 0.4)).sum() >= 5 and first.loss.max() <= 0.4
    assert (second.loss >= first.loss - 0.01).all() and second.atrophied.sum() > first.atrophied.sum()
    for ses in ("ses-1", "ses-2"):
        healthy = truth[("sub-02", ses)]
        assert healthy.group == "CN" and not healthy.atrophied.any() and healthy.loss.max() < ATROPHIED_FROM
    for sub, ses in sessions:
        assert (demo / GROUNDTRUTH / sub / ses / "anat" / f"{sub}_{ses}_atlas-Brainnetome_dseg.nii.gz").is_file()
    # each session is its head's own scan: sub-02's first, at its base's age with no disease, is the shipped head voxel for
    # voxel; every other keeps the head's grid and scaling, and changes only inside the brain
    heads = pd.read_csv(DEMO_HEADS / "heads.tsv", sep="\t").set_index("participant_id")
    for sub, ses in sessions:
        scan = nib.load(DEMO_HEADS / heads.loc[sub, "t1w"])
        session = nib.load(demo / sub / ses / "anat" / f"{sub}_{ses}_T1w.nii.gz")
        assert np.array_equal(session.affine, scan.affine) and session.dataobj.slope == scan.dataobj.slope
        changed = np.asanyarray(session.dataobj.get_unscaled()) != np.asanyarray(scan.dataobj.get_unscaled())
        brain = np.asarray(nib.load(demo / GROUNDTRUTH / sub / ses / "anat" / f"{sub}_{ses}_desc-brain_mask.nii.gz").dataobj) > 0
        assert (changed.sum() == 0) == ((sub, ses) == ("sub-02", "ses-1")) and not (changed & ~ndimage.binary_dilation(brain)).any()


@pytest.mark.slow
def test_demo_is_the_same_bytes_twice_and_made_again_in_place_leaves_every_file_untouched(demo, tmp_path):
    again = tmp_path / "bids"
    assert synth_cli.main([str(again)]) == 0
    files = sorted(p.relative_to(demo) for p in demo.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    assert [f for f in files if not filecmp.cmp(demo / f, again / f, shallow=False)] == []
    # in place: not one file rewritten, so a participant run's work folder (nipype hashes by time) stays valid
    made = {f: (again / f).stat().st_mtime_ns for f in files}
    assert synth_cli.main([str(again)]) == 0
    assert {f: (again / f).stat().st_mtime_ns for f in files} == made


def test_demo_command_line_refuses_options_it_does_not_take(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_code:
        synth_cli.main([str(tmp_path / "bids"), "--ad-fraction", "1"])
    assert exit_code.value.code == 2 and "the demo's subjects are fixed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synth_cli.main([str(tmp_path / "bids"), "--n-subjects", "2", "--base", str(tmp_path)])
    with pytest.raises(SystemExit):  # no scanner is simulated for a session on a real head
        synth_cli.main([str(tmp_path / "bids"), "--acquisition-seed", "3"])


@pytest.mark.slow
def test_quick_start_calls_the_healthy_head_control_and_the_atrophied_one_ad_and_flags_its_atrophy(demo, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main([str(demo), str(out), "participant", "-w", str(tmp_path / "work")]) == 0
    last_lines = capsys.readouterr().out.strip().splitlines()[-2:]
    assert [line.split(":")[1].strip() for line in last_lines] == ["truth check, sub-01", "truth check, sub-02"]
    # what README's quick start shows: the same words, and its numbers within what another CPU's arithmetic moves
    readme = " ".join(README.read_text().split())
    quoted = [line.strip() for line in README.read_text().splitlines() if line.strip().startswith("bids_pscore: truth check")]
    assert [words_of(line) for line in last_lines] == [words_of(line) for line in quoted]
    for line, quoted_line in zip(last_lines, quoted):
        for got, said in zip(numbers_of(line), numbers_of(quoted_line)):
            # AD probabilities (decimals) within 0.05; counts of flags and hits within 2
            assert float(got) == pytest.approx(float(said), abs=0.05 if "." in said else 2), (line, quoted_line)
    whole = re.search(r"whole-brain P-score is ([\d.]+) and ([\d.]+) for sub-01, ([\d.]+) and ([\d.]+) for sub-02", readme)
    got = [pd.read_json(path, typ="series")["WholeBrainPScore"] for path in sorted(layout.summary_files(out))]
    assert got == pytest.approx([float(x) for x in whole.groups()], rel=0.03)
    assert cli.main([str(demo), str(out), "group"]) == 0
    truth = read_truth(demo)
    labels = region_table()["label"].to_numpy()
    flags = {}
    for path in layout.summary_files(out):
        entities = bids.source_entities(path)
        key = (f"sub-{entities['sub']}", f"ses-{entities['ses']}")
        summary = pd.read_json(path, typ="series")
        flags[key] = (summary["PredictedClass"], np.isin(labels, summary["Normative"]["AtrophicRegions"]))
    assert {key: called for key, (called, _) in flags.items()} == {
        ("sub-01", "ses-1"): "AD", ("sub-01", "ses-2"): "AD", ("sub-02", "ses-1"): "control", ("sub-02", "ses-2"): "control"}  # fmt: skip
    atrophied_flags = np.concatenate([flags[("sub-01", ses)][1] for ses in ("ses-1", "ses-2")])
    truly = np.concatenate([truth[("sub-01", ses)].atrophied for ses in ("ses-1", "ses-2")])
    assert atrophied_flags.sum() >= 2 and (atrophied_flags & truly).sum() > atrophied_flags.sum() / 2
    assert all(flags[("sub-02", ses)][1].sum() <= 1 for ses in ("ses-1", "ses-2"))
    # the reports show the truth beside the result
    subject_report = (out / "sub-01.html").read_text()
    assert "<h2>Truth</h2>" in subject_report and "truth check, sub-01: truly AD, typical subtype" in subject_report
    group_report = (out / "group" / "report.html").read_text()
    assert "<h2>Truth</h2>" in group_report and re.search(r"<td>sub-02</td><td>ses-2</td><td>healthy \(CN\)</td>", group_report)


@pytest.mark.slow
def test_truth_is_read_only_from_what_bids_pscore_synth_made_and_flags_are_split_into_hits_misses_and_false(demo, tmp_path):
    import shutil

    from bids_pscore.synth.truth import check_flags

    truth = read_truth(demo)[("sub-01", "ses-1")]
    labels = region_table()["label"].to_numpy()
    flagged = truth.atrophied.copy()
    missed, false = np.flatnonzero(truth.atrophied)[0], np.flatnonzero(~truth.atrophied)[0]
    flagged[missed], flagged[false] = False, True
    check = check_flags(flagged, truth, labels)
    assert [label for label, _ in check.misses] == [labels[missed]] and [label for label, _ in check.false_flags] == [labels[false]]
    assert len(check.hits) == truth.atrophied.sum() - 1 and [loss for _, loss in check.hits] == sorted((loss for _, loss in check.hits), reverse=True)
    # a dataset whose derivatives/groundtruth another tool made has no truth for the app
    other = tmp_path / "bids"
    shutil.copytree(demo, other)
    description = other / GROUNDTRUTH / "dataset_description.json"
    description.write_text(description.read_text().replace("bids_pscore-synth", "fmriprep"))
    assert read_truth(other) is None and read_truth(tmp_path) is None


def test_a_truth_table_names_the_largest_misses_and_counts_the_rest():
    from bids_pscore.report.html import MISSES_LISTED, truth_cells
    from bids_pscore.synth.truth import SessionTruth, check_flags

    labels = region_table()["label"].to_numpy()
    loss = np.zeros(len(labels))
    loss[:20] = np.linspace(0.11, 0.30, 20)  # 20 truly atrophied regions, the largest loss at index 19
    truth = SessionTruth("AD", "typical", 3.0, loss)
    flagged = np.zeros(len(labels), bool)
    flagged[19] = True  # found the largest loss
    *_, hits, misses, false_flags = truth_cells(truth, "AD", 0.9, check_flags(flagged, truth, labels), "normative")
    assert hits.startswith(f"{labels[19]} (") and hits.endswith("lost 30%") and false_flags == "none"
    assert misses.startswith(f"19 regions; the {MISSES_LISTED} largest losses: {labels[18]} (") and f"; and {19 - MISSES_LISTED} more" in misses
    assert f"{labels[18 - MISSES_LISTED]} (" not in misses and f"{labels[18 - MISSES_LISTED + 1]} (" in misses


@pytest.fixture
def made_truth(tmp_path):
    """A dataset folder with only the truth bids_pscore-synth writes: sub-01 AD (two regions lost, one of them a label
    that holds spaces), sub-02 CN; and the labels, the spaced one's index and its neighbour's."""
    from bids_pscore.synth.truth import MAKER

    labels = region_table()["label"].to_numpy()
    spaced = int(np.flatnonzero(labels == "L.TE1.0 and TE1.2")[0])
    root = tmp_path / GROUNDTRUTH
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "truth", "GeneratedBy": [{"Name": MAKER}]}))
    pd.DataFrame({"participant_id": ["sub-01", "sub-02"], "session_id": ["ses-1", "ses-1"], "group": ["AD", "CN"], "subtype": ["typical", "none"],
                  "disease_stage": [3.0, np.nan]}).to_csv(root / "sessions.tsv", sep="\t", index=False, na_rep="n/a")  # fmt: skip
    pd.DataFrame({"participant_id": "sub-01", "session_id": "ses-1", "index": [spaced + 1, 1], "volume_loss": [0.3, 0.2]}).to_csv(
        root / "regions.tsv", sep="\t", index=False
    )
    return tmp_path, labels, spaced


def test_the_truth_check_says_a_sentence_per_subject_with_a_truth_and_nothing_without_one(made_truth, tmp_path):
    from bids_pscore.report.participant import truth_check

    folder, labels, spaced = made_truth
    scored = [("01", "AD", 0.9, [labels[spaced], labels[5]]), ("02", "control", 0.2, []), ("03", "AD", 0.8, [])]  # sub-03: no truth
    results = [SimpleNamespace(t1w=SimpleNamespace(entities={"sub": sub, "ses": "1"}), predicted_class=called, ad_probability=p,
                               degenerative=flagged, normative=None) for sub, called, p, flagged in scored]  # fmt: skip
    assert truth_check(results, folder) == [
        "truth check, sub-01: truly AD, typical subtype, stage 3.0; called AD in 1 of 1 session(s) (AD probability 0.90); its patent flags "
        "found 1 of 2 truly atrophied regions (lost 10% or more), with 1 false flag(s)",
        "truth check, sub-02: truly healthy (CN); called control in 1 of 1 session(s) (AD probability 0.20); no region truly lost 10% or "
        "more, and its patent flags made 0 false flag(s)",
    ]
    assert truth_check(results, tmp_path / "another dataset") == []


def test_the_group_report_checks_each_t1w_flags_against_the_truth_labels_with_spaces_too(made_truth, tmp_path):
    from bids_pscore.report.group import truth_section
    from bids_pscore.report.html import TRUTH_COLUMNS, truth_cells
    from bids_pscore.synth.truth import check_flags

    folder, labels, spaced = made_truth
    # sub-01's session has two T1w (run-2 flags nothing), sub-02 one, sub-03 has no truth
    t1w = ["sub-01_ses-1_run-1", "sub-01_ses-1_run-2", "sub-02_ses-1", "sub-03_ses-1"]
    flags = np.zeros((len(t1w), len(labels)), bool)
    flags[0, [spaced, 5]] = flags[2, 1] = flags[3, 1] = True
    sessions = pd.DataFrame({"participant_id": ["sub-01", "sub-01", "sub-02", "sub-03"], "session_id": "ses-1", "t1w": t1w,
                             "predicted_class": ["AD", "AD", "control", "AD"], "ad_probability": [0.9, 0.7, 0.2, 0.8],
                             "degenerative_regions": ["; ".join(labels[f]) for f in flags]})  # fmt: skip
    regions = pd.DataFrame({"t1w": np.repeat(t1w, len(labels)), "label": np.tile(labels, len(t1w)), "degenerative": flags.ravel()})
    section = truth_section(sessions, regions, "patent", folder)
    truth = read_truth(folder)
    # as the group level checked them from its flags, a row per T1w with a truth, in the sessions' order
    assert section["header"] == ("subject", "session", *TRUTH_COLUMNS)
    assert section["rows"] == [
        (s.participant_id, s.session_id, *truth_cells(truth[(s.participant_id, s.session_id)], s.predicted_class, s.ad_probability,
                                                      check_flags(f, truth[(s.participant_id, s.session_id)], labels), "patent"))
        for s, f in zip(sessions.itertuples(), flags[:3])
    ]  # fmt: skip
    assert section["rows"][0][6].startswith(f"{labels[spaced]} (") and section["rows"][1][6] == "none"
    assert truth_section(sessions, regions, "patent", tmp_path / "another dataset") is None
