"""Group level: frequencies, co-degeneration sets, ordering, slopes, onset order, comparison, refusals."""

import html
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, mannwhitneyu

from bids_pscore import bids, errors, group, group_sessions, group_statistics, tabular
from bids_pscore.atlas import region_table
from bids_pscore.cli import run as cli
from bids_pscore.derivatives import layout
from bids_pscore.fileio import write_json, write_text
from bids_pscore.report.html import region_name
from bids_pscore.synth.disease import subtype_order

from .scored import SCORED_LAMBDA, SCORED_NORMATIVE_THRESHOLD, write_scored_cohort, write_scored_session

REGIONS = region_table()
LAMBDA = SCORED_LAMBDA


def make_bids(root, subjects, sessions_tsv=None):
    write_json(root / "dataset_description.json", {"Name": "group test", "BIDSVersion": "1.10.0"})
    for sub in subjects:
        (root / f"sub-{sub}").mkdir(parents=True, exist_ok=True)
    for sub, table in (sessions_tsv or {}).items():
        table.to_csv(root / f"sub-{sub}" / f"sub-{sub}_sessions.tsv", sep="\t", index=False)
    return root


def test_frequency_and_support_by_hand():
    flags = np.zeros((4, 246), bool)
    flags[0, [0, 1, 2]] = True  # session 0: regions 1, 2, 3
    flags[1, [0, 1]] = True
    flags[2, [0]] = True
    flags[3, [1, 2]] = True  # session 3 is predicted control
    predicted = np.array([True, True, True, False])
    table = group_statistics.degeneration_frequency(flags, REGIONS, predicted).set_index("index")
    assert table.loc[1, "frequency_predicted_ad"] == pytest.approx(3 / 3)
    assert table.loc[2, "frequency_predicted_ad"] == pytest.approx(2 / 3)
    assert table.loc[3, "frequency_predicted_ad"] == pytest.approx(1 / 3)
    assert list(table.sort_values("rank").index[:3]) == [1, 2, 3]
    labels = REGIONS["label"].to_numpy()
    sets = group_statistics.frequent_sets(flags[predicted], labels, min_support=0.3, max_size=3)
    found = dict(zip(sets["regions"], sets["support"]))
    pair = " + ".join(sorted(labels[[0, 1]]))
    triple = " + ".join(sorted(labels[[0, 1, 2]]))
    assert found == pytest.approx({pair: 2 / 3, " + ".join(sorted(labels[[0, 2]])): 1 / 3,
                                   " + ".join(sorted(labels[[1, 2]])): 1 / 3, triple: 1 / 3})  # fmt: skip
    assert list(group_statistics.frequent_sets(flags[predicted], labels, 0.5, 3)["regions"]) == [pair]


def _sessions(rows):
    frame = pd.DataFrame(rows, columns=["sub", "ses"])
    frame["participant_id"] = "sub-" + frame["sub"]
    frame["session_id"] = "ses-" + frame["ses"]
    frame["t1w"] = frame["participant_id"] + "_" + frame["session_id"]
    return frame


def test_sessions_are_ordered_by_acquisition_time_else_by_label():
    sessions = _sessions([("01", "b"), ("01", "a"), ("02", "10"), ("02", "2")])
    times = {("01", "a"): (pd.Timestamp("2020-06-01"), "sessions.tsv"), ("01", "b"): (pd.Timestamp("2019-06-01"), "sessions.tsv"),
             ("02", "2"): (pd.Timestamp("2020-01-01"), "scans.tsv")}  # fmt: skip
    ordered = group_sessions.order_sessions(sessions, times)
    one = ordered[ordered["sub"] == "01"]
    assert list(one["ses"]) == ["b", "a"] and set(one["order_by"]) == {"acq_time"}  # time beats label
    assert list(one["years_from_first"].round(3)) == [0.0, round(366 / 365.25, 3)]
    two = ordered[ordered["sub"] == "02"]  # ses-10 has no time: by label, ses-2 before ses-10
    assert list(two["ses"]) == ["2", "10"] and set(two["order_by"]) == {"session label"}
    assert two["years_from_first"].isna().all() and list(two["session_index"]) == [0, 1]


def test_acquisition_times_from_sessions_and_scans_tables(tmp_path):
    root = make_bids(tmp_path, ["01", "02"], {"01": pd.DataFrame({"session_id": ["ses-1"], "acq_time": ["2020-01-02T10:00:00"]})})
    scans = root / "sub-02" / "ses-1" / "sub-02_ses-1_scans.tsv"
    scans.parent.mkdir(parents=True)
    scans.write_text("filename\tacq_time\nanat/sub-02_ses-1_T1w.nii.gz\t2021-03-04T08:00:00\n")
    times = tabular.acquisition_times(root)
    assert times[("01", "1")] == (pd.Timestamp("2020-01-02T10:00:00"), "sessions.tsv")
    assert times[("02", "1")] == (pd.Timestamp("2021-03-04T08:00:00"), "scans.tsv")


def test_acquisition_times_with_and_without_time_zone_give_the_interval_in_years(tmp_path):
    table = pd.DataFrame({"session_id": ["ses-1", "ses-2"], "acq_time": ["2020-01-01T10:00:00Z", "2021-01-01T10:00:00"]})
    times = tabular.acquisition_times(make_bids(tmp_path, ["01"], {"01": table}))
    ordered = group_sessions.order_sessions(_sessions([("01", "2"), ("01", "1")]), times)
    assert list(ordered["ses"]) == ["1", "2"] and list(ordered["years_from_first"]) == pytest.approx([0.0, 366 / 365.25])


def test_slope_per_year_and_onset_on_constructed_trajectories():
    sessions = _sessions([("01", "1"), ("01", "2"), ("01", "3")])
    years = np.array([0.0, 1.5, 3.0])
    times = {("01", str(k + 1)): (pd.Timestamp("2020-01-01") + pd.Timedelta(days=365.25 * y), "sessions.tsv") for k, y in enumerate(years)}
    ordered = group_sessions.order_sessions(sessions, times)
    scores = np.full((3, 246), 0.1)
    scores[:, 0] = 0.1 + 0.2 * years  # crosses 0.5 at the third session (0.7)
    scores[:, 1] = 0.9 - 0.1 * years  # above from the first session
    traj = group_statistics.trajectories(ordered, scores, scores > LAMBDA, REGIONS).set_index("index")
    assert traj.loc[1, "slope"] == pytest.approx(0.2, abs=1e-3) and traj.loc[1, "unit"] == "year"
    assert traj.loc[2, "slope"] == pytest.approx(-0.1, abs=1e-3)
    assert traj.loc[1, "onset_session"] == "ses-3" and traj.loc[1, "onset"] == pytest.approx(3.0, abs=1e-3)
    assert traj.loc[2, "onset"] == 0 and np.isnan(traj.loc[3, "onset"])


def test_a_subject_without_acquisition_times_puts_the_whole_group_per_session(caplog):
    # slopes per year and per session in one table would be pooled into one median onset
    sessions = _sessions([("01", "1"), ("01", "2"), ("01", "3"), ("02", "1"), ("02", "2")])
    times = {("01", str(k + 1)): (pd.Timestamp("2020-01-01") + pd.Timedelta(days=365.25 * 2 * k), "sessions.tsv") for k in range(3)}
    ordered = group_sessions.order_sessions(sessions, times)
    scores = np.full((5, 246), 0.1)
    scores[:3, 0] = [0.1, 0.3, 0.7]  # sub-01: 0.3 a session, 0.15 a year
    scores[3:, 0] = [0.2, 0.6]
    with caplog.at_level("INFO", logger="bids_pscore.group"):
        traj = group_statistics.trajectories(ordered, scores, scores > LAMBDA, REGIONS)
    first = traj[traj["index"] == 1].set_index("participant_id")
    assert set(traj["unit"]) == {"session"} and first.loc["sub-01", "slope"] == pytest.approx(0.3) and first.loc["sub-01", "onset"] == 2
    assert "sub-02" in caplog.text and "per session" in caplog.text
    assert set(group_statistics.onset_order(traj, REGIONS)["unit"]) == {"session"}


def test_regions_as_early_in_as_many_subjects_share_an_order_of_involvement():
    traj = pd.DataFrame({"participant_id": ["a", "a", "a", "a", "b", "b"], "index": [4, 2, 3, 7, 1, 5],
                         "onset": [0, 0, 1.2, 1.2, 0, np.nan], "unit": "year"})  # fmt: skip
    onset = group_statistics.onset_order(traj, REGIONS)
    assert list(onset["index"][:5]) == [1, 2, 4, 3, 7] and list(onset["order"][:5]) == [1, 1, 1, 4, 4]
    assert (onset["order"][5:] == 0).all()


def test_group_comparison_finds_the_region_that_differs():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 0.3, (40, 246))
    is_ad = np.arange(40) < 20
    scores[is_ad, 10] += 0.5
    table = group_statistics.compare_groups(scores, is_ad, REGIONS)
    top = table.iloc[0]
    assert top["index"] == 11 and top["q_fdr"] < 1e-4 and top["rank_biserial_r"] == pytest.approx(1.0)
    assert (table["q_fdr"].iloc[1:] > 0.01).all()


@pytest.fixture(scope="module")
def cohort_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("group")
    bids_dir, order = write_scored_cohort(root / "out", root / "bids", n_subjects=16, n_sessions=5, seed=0)
    code = cli.main([str(bids_dir), str(root / "out"), "group", "--label-column", "group", "--positive", "AD", "--negative", "CN"])
    return root / "out", order, code


def test_recovered_order_of_involvement_agrees_with_the_truth(cohort_run):
    out, order, code = cohort_run
    assert code == 0
    onset = pd.read_csv(out / "group" / "onset_order.tsv", sep="\t", na_values="n/a")
    involved = onset[onset["order"] > 0].set_index("index")
    truth = order.set_index("index")["stage"]
    common = truth.index.intersection(involved.index)
    assert len(common) >= 0.9 * len(truth)  # the regions that truly crossed lambda in some subject
    tau, _ = kendalltau(truth[common], involved.loc[common, "order"])
    print(f"Kendall tau {tau:.3f} over {len(common)} regions")
    assert tau >= 0.7
    first = set(order.loc[order["stage"] == 0, "index"])
    assert set(involved.index[: len(first)]) == first  # the medial temporal lobe first


def test_cohort_tables_load_in_pandas_and_say_their_normalisation(cohort_run):
    out, _, _ = cohort_run
    sessions = pd.read_csv(out / "group" / "sessions.tsv", sep="\t", na_values="n/a")
    assert len(sessions) == 80 and {
        "acq_time",
        "order_by",
        "group",
        "diagnosis",
        "ad_probability",
        "predicted_class",
        "whole_brain_pscore_reference",
        "whole_brain_pscore_cohort",
        "n_degenerative",
    } <= set(sessions.columns)
    assert (sessions["order_by"] == "acq_time").all() and (sessions["normalisation"] == "reference").all()
    regions = pd.read_csv(out / "group" / "regions.tsv", sep="\t")
    assert len(regions) == 80 * 246
    assert regions["p_region_norm_cohort"].between(0, 1).all()
    # degenerative_regions lists each T1w's flagged labels with "; " between them: two labels hold a space ("L.TE1.0 and TE1.2")
    flagged = regions[regions["degenerative"]].groupby("t1w")["label"].agg(list)
    for row in sessions.itertuples():
        listed = [] if pd.isna(row.degenerative_regions) else row.degenerative_regions.split("; ")
        assert listed == flagged.get(row.t1w, []) and len(listed) == row.n_degenerative
    sidecar = json.loads((out / "group" / "regions.json").read_text())
    assert sidecar["Normalisation"].startswith("reference") and "p_region_norm_cohort" in sidecar
    frequency = pd.read_csv(out / "group" / "degeneration_frequency.tsv", sep="\t")
    # here every AD-labelled session is predicted AD, so the two frequencies agree
    assert np.allclose(frequency["frequency_labelled_ad"], frequency["frequency_predicted_ad"])
    typical = set(subtype_order("typical")["index"])
    assert frequency.iloc[0]["index"] in typical
    comparison = pd.read_csv(out / "group" / "group_comparison.tsv", sep="\t", na_values="n/a")
    assert comparison.iloc[0]["q_fdr"] < 0.05 and comparison.iloc[0]["index"] in typical
    # one row per subject, its first session (a person's sessions are not independent): 8 AD and 8 CN of 80 sessions
    assert (comparison["n_ad"] == 8).all() and (comparison["n_control"] == 8).all()
    first = sessions.sort_values("acq_time").groupby("participant_id").head(1)
    top = comparison.iloc[0]
    values = regions[regions["index"] == top["index"]].merge(first[["participant_id", "session_id", "group"]], on=["participant_id", "session_id"])
    by_group = [values.loc[values["group"] == g, "p_region_norm_reference"] for g in ("AD", "CN")]
    assert (top["median_ad"], top["median_control"]) == pytest.approx([np.median(v) for v in by_group], rel=1e-5)  # 6 digits in the TSV
    assert (top["u"], top["p"]) == pytest.approx(tuple(mannwhitneyu(*by_group, alternative="two-sided")), rel=1e-5)
    page = (out / "group" / "report.html").read_text()
    for figure in ("whole_brain_by_group", "degeneration_frequency_bars", "degeneration_frequency_map", "trajectories_plot", "onset_order_plot"):
        assert f"figures/{figure}.png" in page and (out / "group" / "figures" / f"{figure}.png").is_file()


def test_refuses_an_empty_folder_and_mixed_models_and_writes_nothing(tmp_path, capsys):
    bids_dir = make_bids(tmp_path / "bids", ["01", "02"])
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main([str(bids_dir), str(out), "group"]) == errors.EXIT_NO_T1W
    assert "participant level first" in capsys.readouterr().err
    write_scored_session(out, ("01", None), np.zeros(246), 0.2, model="model-a")
    write_scored_session(out, ("02", None), np.zeros(246), 0.7, model="model-b")
    before = sorted(p for p in out.rglob("*"))
    assert cli.main([str(bids_dir), str(out), "group"]) == errors.EXIT_MODEL
    assert "2 different models" in capsys.readouterr().err
    assert sorted(p for p in out.rglob("*")) == before


def test_label_column_needs_both_values(tmp_path, capsys):
    write_text(tmp_path / "x.txt", "")
    assert cli.main([str(tmp_path), str(tmp_path / "out"), "group", "--label-column", "group"]) == errors.EXIT_USAGE
    assert "--positive and --negative" in capsys.readouterr().err


def test_two_runs_of_one_session_are_one_time_point_not_a_trajectory():
    sessions = _sessions([("01", "1"), ("01", "1"), ("02", "1"), ("02", "2")])
    sessions.loc[1, "t1w"] = "sub-01_ses-1_run-2"
    sessions.loc[0, "t1w"] = "sub-01_ses-1_run-1"
    ordered = group_sessions.order_sessions(sessions, {})
    one = ordered[ordered["sub"] == "01"]
    assert list(one["repeat"]) == [False, True] and list(one["session_index"]) == [0, 0]
    assert list(one["t1w"]) == ["sub-01_ses-1_run-1", "sub-01_ses-1_run-2"]  # run-1 is the time point
    scores = np.tile(np.linspace(0, 1, 4)[:, None], (1, 246))
    traj = group_statistics.trajectories(ordered, scores, scores > LAMBDA, REGIONS)
    assert set(traj["participant_id"]) == {"sub-02"}  # sub-01 has one time point, however many runs


def test_session_label_selects_sessions_and_no_stale_comparison_survives(tmp_path, capsys):
    bids_dir, _ = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=10, n_sessions=3, seed=2)
    out = tmp_path / "out"
    labelled = ["group", "--label-column", "group", "--positive", "AD", "--negative", "CN"]
    assert cli.main([str(bids_dir), str(out), *labelled]) == 0
    assert (out / "group" / "group_comparison.tsv").is_file()
    assert json.loads((out / "group" / "group_comparison.json").read_text())["MinimumSubjectsPerGroup"] == group_statistics.MIN_SUBJECTS_PER_GROUP
    # a later run without labels: no comparison, and none left from before
    assert cli.main([str(bids_dir), str(out), "group"]) == 0
    assert not (out / "group" / "group_comparison.tsv").exists() and not (out / "group" / "group_comparison.json").exists()
    # one session: a subset, beside group/
    assert cli.main([str(bids_dir), str(out), "group", "--session-label", "2"]) == 0
    sessions = pd.read_csv(out / "group_ses-2" / "sessions.tsv", sep="\t", na_values="n/a")
    assert len(sessions) == 10 and set(sessions["session_id"]) == {"ses-2"}
    assert len(pd.read_csv(out / "group" / "sessions.tsv", sep="\t")) == 30


def _with_scores(out, subjects, high=()):
    """One session per subject, predicted AD when its label is in ``high``, with the regions (atlas
    index) of ``high[label]`` flagged (normalised score 0.9 > lambda); participants.tsv says AD for them."""
    for sub in subjects:
        norm = np.full(246, 0.1)
        norm[np.asarray(high.get(sub, []), int) - 1] = 0.9
        write_scored_session(out, (sub, None), norm, 0.9 if sub in high else 0.1)
    bids_dir = make_bids(out.parent / "bids", subjects)
    pd.DataFrame({"participant_id": [f"sub-{s}" for s in subjects], "group": ["AD" if s in high else "CN" for s in subjects]}).to_csv(
        bids_dir / "participants.tsv", sep="\t", index=False
    )
    return bids_dir


def test_one_subject_a_group_gets_no_test_no_empty_chart_and_the_models_warnings(tmp_path, capsys):
    """1 against 1 (the demo): Mann-Whitney could only give p = 1, a frequency chart of no bars says
    nothing, and the participant level's warnings of the model (its own, lambda >= 1) are the group's too."""
    out = tmp_path / "out"
    bids_dir = _with_scores(out, ["01", "02"], {"01": []})
    for path in layout.summary_files(out):
        summary = json.loads(path.read_text())
        summary["Lambda"], summary["Model"]["Warning"] = 1.25, "the demo model, trained on synthetic data"
        write_json(path, summary)
    code = cli.main([str(bids_dir), str(out), "group", "--label-column", "group", "--positive", "AD", "--negative", "CN", "--flags", "patent"])
    printed = capsys.readouterr().out
    assert code == 0
    assert not (out / "group" / "group_comparison.tsv").exists()
    page = html.unescape((out / "group" / "report.html").read_text())
    refusal = f"the Mann-Whitney test is made only with at least {group_statistics.MIN_SUBJECTS_PER_GROUP} in each group"
    assert "No comparison of AD and CN: their first sessions hold 1 and 1 subject(s)" in page and refusal in page
    assert "smallest possible p is 1" in page
    # no chart without bars, no table of zeros: a sentence each
    assert "<img" in page and "whole_brain_by_group.png" in page
    for figure in ("degeneration_frequency_bars", "degeneration_frequency_map", "trajectories_plot", "onset_order_plot"):
        assert figure not in page and not (out / "group" / "figures" / f"{figure}.png").exists()
    assert "<h2>Degeneration frequency</h2>\n<p>No session predicted AD has a region flagged (patent flags)" in page
    assert "No subject has two or more sessions, so there are no trajectories" in page
    # the model's warnings and the analysis' own: on the console, at the top of the report, in every sidecar
    sidecar = json.loads((out / "group" / "sessions.json").read_text())
    assert (
        sidecar["MinimumSubjectsPerGroup"] == group_statistics.MIN_SUBJECTS_PER_GROUP
        and sidecar["MinimumCohortSessions"] == group_statistics.MIN_COHORT_SESSIONS
    )
    for said in ("the demo model, trained on synthetic data", "this model's lambda (1.25) is not below 1",
                 f"cohort normalisation is over 2 session(s), fewer than the {group_statistics.MIN_COHORT_SESSIONS}"):  # fmt: skip
        assert f'<div class="warning">{said}' in page and said in printed and any(w.startswith(said) for w in sidecar["Warnings"])
    assert any(refusal in w for w in sidecar["Warnings"]) and refusal in printed


def test_subjects_followed_without_a_flag_get_sentences_not_empty_charts(tmp_path):
    out = tmp_path / "out"
    for sub in ("01", "02"):
        for ses in ("1", "2"):
            write_scored_session(out, (sub, ses), np.full(246, 0.1), 0.9)
    assert cli.main([str(make_bids(tmp_path / "bids", ["01", "02"])), str(out), "group", "--flags", "patent"]) == 0
    page = (out / "group" / "report.html").read_text()
    assert "figures/" in page and "trajectories_plot" not in page and "onset_order_plot" not in page
    assert "No region crosses lambda over a subject&#39;s sessions or is flagged in a session predicted AD" in page
    assert "<h2>Trajectories and order of involvement</h2>\n<p>No region crosses lambda" in page


def test_frequency_table_ranks_by_frequency_and_lists_only_regions_degenerative(tmp_path):
    out = tmp_path / "out"
    bids_dir = _with_scores(out, ["01", "02", "03", "04"], {"01": [200, 5], "02": [200, 100], "03": [200, 5, 100]})
    assert cli.main([str(bids_dir), str(out), "group", "--flags", "patent"]) == 0
    frequency = pd.read_csv(out / "group" / "degeneration_frequency.tsv", sep="\t", na_values="n/a")
    assert list(frequency["index"][:3]) == [200, 5, 100] and list(frequency["rank"][:3]) == [1, 2, 2]  # 5 and 100 tie
    assert frequency["rank"][3:].isna().all() and (frequency["frequency_predicted_ad"][3:] == 0).all()
    page = (out / "group" / "report.html").read_text()
    table = page.split("<h2>Degeneration frequency</h2>")[1].split("</table>")[0]
    labels = REGIONS.set_index("index")["label"]
    assert table.count("<tr>") == 4  # the header and the three regions degenerative in some session
    # each region by its code and full name (the atlas table's)
    assert (
        table.index(f"<td>{region_name(labels[200])}</td>")
        < table.index(f"<td>{region_name(labels[5])}</td>")
        < table.index(f"<td>{region_name(labels[100])}</td>")
    )
    assert "<tr><th>" not in page.split("<h2>Cohort</h2>")[1].split("</table>")[0]  # a two-column table of names and values: no empty header
    assert "figures/degeneration_frequency_bars.png" in page


def test_a_subset_run_writes_beside_group_and_never_replaces_it(tmp_path, capsys):
    bids_dir, _ = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=4, n_sessions=2, seed=7)
    out = tmp_path / "out"
    assert cli.main([str(bids_dir), str(out), "group"]) == 0
    assert cli.main([str(bids_dir), str(out), "group", "--participant-label", "0001"]) == 0
    assert "tables and report in " + str(out / "group_sub-0001") in capsys.readouterr().out
    assert len(pd.read_csv(out / "group" / "sessions.tsv", sep="\t")) == 8  # the whole analysis stays
    assert set(pd.read_csv(out / "group_sub-0001" / "sessions.tsv", sep="\t")["participant_id"]) == {"sub-0001"}
    said = "a subset: sub-0001 (2 of the 8 scored T1w in the output folder), written to group_sub-0001/ beside group/"
    assert said in (out / "group_sub-0001" / "report.html").read_text()
    assert json.loads((out / "group_sub-0001" / "regions.json").read_text())["Selection"].startswith(said)
    assert "Selection" not in json.loads((out / "group" / "regions.json").read_text())
    # labels that select every scored session are the whole analysis; many labels make a short name
    assert group.group_folder(out, ("0001", "0002", "0003", "0004")) == (out / "group", None)
    many = group.group_folder(out, ("0001", *(f"{k:04d}" for k in range(5, 40))))[0]  # 0002-0004 left out
    assert many.parent == out and many.name.startswith("group_subset-") and len(many.name) <= group.MAX_SUBSET_NAME


def test_damaged_outputs_and_tables_are_named_and_left_out_without_a_traceback(tmp_path, capsys):
    bids_dir, _ = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=4, n_sessions=2, seed=3)
    out = tmp_path / "out"
    summaries = layout.summary_files(out)
    summaries[0].write_text("{not json")
    region_table = out / layout.output_path(bids.source_entities(summaries[1]), "region_table")
    region_table.write_text("\n".join(region_table.read_text().splitlines()[:100]))  # truncated
    (out / layout.output_path(bids.source_entities(summaries[2]), "region_table")).unlink()
    (bids_dir / "participants.tsv").write_text("subject\tgroup\nsub-01\tAD\n")  # no participant_id
    sessions_tsv = next(bids_dir.glob("sub-*/sub-*_sessions.tsv"))
    sessions_tsv.write_text("session_id\tacq_time\nses-1\tyesterday\n")
    code = cli.main([str(bids_dir), str(out), "group"])
    printed = capsys.readouterr().out
    assert code == 1 and "Traceback" not in printed
    for path in summaries[:3]:
        assert f"left out {path.name}: unreadable or incomplete outputs" in printed
    assert "no participant_id column" in printed and "acq_time 'yesterday' is not a date and time" in printed
    assert len(pd.read_csv(out / "group" / "sessions.tsv", sep="\t")) == 5


def test_normative_flags_are_counted_by_default_and_say_so(tmp_path, capsys):
    """SPEC 10 at group level: with normative outputs in every session the tables count atrophic
    regions (grey-level z below the calibrated threshold) unless --flags patent is asked."""
    bids_dir, order = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=12, n_sessions=4, seed=4, normative=True)
    assert cli.main([str(bids_dir), str(tmp_path / "out"), "group"]) == 0
    sessions = pd.read_csv(tmp_path / "out" / "group" / "sessions.tsv", sep="\t", na_values="n/a")
    regions = pd.read_csv(tmp_path / "out" / "group" / "regions.tsv", sep="\t")
    assert (sessions["flags"] == "normative").all()
    # the typical subtype's late sessions have lost tissue in over half the regions: their median |z| lies beyond the
    # reference's distance threshold, and their flags are left out
    keys = ["participant_id", "session_id"]
    reliable = regions[keys].merge(sessions[[*keys, "normative_reliable"]], on=keys, how="left")["normative_reliable"].to_numpy(bool)
    assert 0.8 <= reliable.mean() < 1
    assert (regions["degenerative"] == ((regions["grey_level_z"] < SCORED_NORMATIVE_THRESHOLD) & reliable)).all()
    assert json.loads((tmp_path / "out" / "group" / "onset_order.json").read_text())["Flags"].startswith("normative")
    onset = pd.read_csv(tmp_path / "out" / "group" / "onset_order.tsv", sep="\t", na_values="n/a")
    involved = onset[onset["order"] > 0].set_index("index")
    truth = order.set_index("index")["stage"]
    common = truth.index.intersection(involved.index)
    tau, _ = kendalltau(truth[common], involved.loc[common, "order"])
    assert len(common) >= 0.8 * len(truth) and tau >= 0.5
    assert "counting normative flags" in capsys.readouterr().out
    assert cli.main([str(bids_dir), str(tmp_path / "out"), "group", "--flags", "patent"]) == 0
    sessions = pd.read_csv(tmp_path / "out" / "group" / "sessions.tsv", sep="\t", na_values="n/a")
    regions = pd.read_csv(tmp_path / "out" / "group" / "regions.tsv", sep="\t")
    assert (sessions["flags"] == "patent").all() and (regions["degenerative"] == (regions["p_region_norm_reference"] > SCORED_LAMBDA)).all()
    # sessions compared with two different references are not pooled
    summary_path = next((tmp_path / "out").glob("sub-*/ses-1/anat/*_desc-summary_pscore.json"))
    summary = json.loads(summary_path.read_text())
    summary["Normative"]["SHA256"] = "another"
    summary_path.write_text(json.dumps(summary))
    assert cli.main([str(bids_dir), str(tmp_path / "out"), "group"]) == 65
    assert "different normative references" in capsys.readouterr().err


def test_normative_flags_need_normative_outputs(tmp_path, capsys):
    bids_dir, _ = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=2, n_sessions=1, seed=1)
    assert cli.main([str(bids_dir), str(tmp_path / "out"), "group", "--flags", "normative"]) == 2
    assert "use --flags patent" in capsys.readouterr().err and not (tmp_path / "out" / "group").exists()


def test_a_summary_without_the_model_checksum_is_named_and_left_out_without_a_traceback(tmp_path, capsys):
    bids_dir, _ = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=3, n_sessions=1, seed=5)
    out = tmp_path / "out"
    damaged = layout.summary_files(out)[0]
    summary = json.loads(damaged.read_text())
    del summary["Model"]["MetadataSHA256"]  # as an earlier bids_pscore wrote it
    write_json(damaged, summary)
    code = cli.main([str(bids_dir), str(out), "group"])
    printed = capsys.readouterr().out
    assert code == errors.EXIT_SESSION_FAILED and "Traceback" not in printed
    assert (
        f"left out {damaged.name}: unreadable or incomplete outputs ('MetadataSHA256'); run the participant level again for this session" in printed
    )


def _cohort_without_a_special_region(out, n_sessions=12, seed=6):
    """Sessions whose raw scores hold, in every region, the same evenly spaced values in another order:
    no region and no session stands out; half the sessions are predicted AD."""
    rng = np.random.default_rng(seed)
    values = np.array([rng.permutation(np.linspace(0.0, 0.3, n_sessions)) for _ in range(246)]).T
    for i, row in enumerate(values):
        write_scored_session(out, (f"{i + 1:02d}", None), row, 0.9 if i % 2 else 0.1)
    return make_bids(out.parent / "bids", [f"{i + 1:02d}" for i in range(n_sessions)])


def test_cohort_normalisation_flags_by_a_lambda_of_the_cohort_and_flags_nothing_when_no_region_stands_out(tmp_path, capsys):
    """Each region reaches 1 in its top session under cohort normalisation; the model's lambda (0.5 here)
    flagged it there, in every region. lambda of the cohort (SPEC 5 over its sessions predicted AD) does not."""
    out = tmp_path / "out"
    bids_dir = _cohort_without_a_special_region(out)
    assert cli.main([str(bids_dir), str(out), "group", "--normalisation", "cohort", "--flags", "patent"]) == 0
    sessions = pd.read_csv(out / "group" / "sessions.tsv", sep="\t", na_values="n/a")
    regions = pd.read_csv(out / "group" / "regions.tsv", sep="\t")
    assert (sessions["n_degenerative"] == 0).all() and not regions["degenerative"].any()
    sidecar = json.loads((out / "group" / "regions.json").read_text())
    ad = regions[regions["t1w"].isin(sessions.loc[sessions["predicted_class"] == "AD", "t1w"])]["p_region_norm_cohort"]
    assert sidecar["Lambda"] == pytest.approx(ad.mean() + 2 * ad.std(ddof=0)) and sidecar["Lambda"] > 1
    assert "lambda over those of them AD and predicted AD" in sidecar["Normalisation"]
    assert "--normalisation cohort: lambda" in capsys.readouterr().out
    # with reference normalisation the model's lambda stays
    assert cli.main([str(bids_dir), str(out), "group", "--flags", "patent"]) == 0
    assert json.loads((out / "group" / "regions.json").read_text())["Lambda"] == LAMBDA


def test_cohort_normalisation_without_a_session_predicted_ad_is_refused_with_the_fix(tmp_path, capsys):
    out = tmp_path / "out"
    for i in range(3):
        write_scored_session(out, (f"0{i + 1}", None), np.full(246, 0.1 * i), 0.1)
    bids_dir = make_bids(tmp_path / "bids", ["01", "02", "03"])
    assert cli.main([str(bids_dir), str(out), "group", "--normalisation", "cohort"]) == errors.EXIT_USAGE
    printed = capsys.readouterr()
    assert "use --normalisation reference" in printed.err and "Traceback" not in printed.err + printed.out
    assert not (out / "group").exists()


def test_flags_of_a_session_far_from_the_normative_reference_are_counted_apart(tmp_path, capsys):
    bids_dir, _ = write_scored_cohort(tmp_path / "out", tmp_path / "bids", n_subjects=4, n_sessions=2, seed=2, normative=True)
    # sub-0002's second session from another scanner: every region far below the reference, all 246 flagged
    write_scored_session(tmp_path / "out", ("0002", "2"), np.full(246, 0.1), 0.9, region_z=np.full(246, -5.0))
    assert cli.main([str(bids_dir), str(tmp_path / "out"), "group"]) == 0
    sessions = pd.read_csv(tmp_path / "out" / "group" / "sessions.tsv", sep="\t", na_values="n/a").set_index(["participant_id", "session_id"])
    assert sessions["normative_reliable"].tolist().count(False) == 1 and not sessions.loc[("sub-0002", "ses-2"), "normative_reliable"]
    assert sessions.loc[("sub-0002", "ses-2"), "n_degenerative"] == 0 and sessions["n_degenerative"].sum() > 0
    regions = pd.read_csv(tmp_path / "out" / "group" / "regions.tsv", sep="\t").set_index(["participant_id", "session_id"])
    far = regions.loc[("sub-0002", "ses-2")]
    assert far["atrophic"].all() and not far["degenerative"].any()  # what the participant level said, and what is counted
    said = "".join(capsys.readouterr())
    assert "1 of 8 session(s) lie far from the model's normative reference" in said and "their 246 atrophic flag(s) are not reliable" in said
    assert "1 of 8 session(s) lie far" in (tmp_path / "out" / "group" / "report.html").read_text()
