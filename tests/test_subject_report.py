"""The subject report: a run that scored only some of the subject's sessions, and what the report of a scored session says."""

import html
import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from bids_pscore import cohort, participant, qc, scoring
from bids_pscore.atlas import region_table
from bids_pscore.bids import T1wInput
from bids_pscore.derivatives import layout
from bids_pscore.derivatives.sidecars import preproc_sidecars
from bids_pscore.fileio import write_json, write_tsv
from bids_pscore.grid import GRID_AFFINE, GRID_SHAPE
from bids_pscore.model.preprocessing import PreprocParams
from bids_pscore.report.html import named_regions

from .helpers import BRAIN_BOX, gate_record_of_a_box

TEMPLATE = "MNI152NLin2009aSym"


def preprocessed_session(out, ses, sub="01"):
    """A T1w with the preprocessing outputs scoring reads (no preprocessing is run)."""
    import nibabel as nib

    raw = np.zeros((10, 12, 14), np.int16)  # only its header is read: 1.2 mm across, LAS
    nib.save(nib.Nifti1Image(raw, np.diag([-1.2, 1.0, 1.0, 1.0])), out / "raw.nii.gz")
    item = T1wInput(out / "raw.nii.gz", f"sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_T1w.nii.gz", {"sub": sub, "ses": ses})
    mask = np.zeros(GRID_SHAPE, np.uint8)
    mask[BRAIN_BOX] = 1
    paths = layout.session_outputs(item.entities, TEMPLATE, layout.PREPROCESSING)
    for key, rel in paths.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        if key in ("t1w_grid", "mask_grid", "mask_native"):
            nib.save(nib.Nifti1Image(mask * np.float32(0.5) if key == "t1w_grid" else mask, GRID_AFFINE), out / rel)
        else:
            (out / rel).write_bytes(b"")
    # the sidecar that says how the image was standardised, which the gate reads
    sidecars = preproc_sidecars(item.relpath, paths, PreprocParams().to_dict(), False, (0.0, 2.0))
    write_json(out / layout.sidecar_path(paths["t1w_grid"]), sidecars["t1w_grid"])
    return item


def test_a_run_of_one_session_keeps_the_other_scored_sessions_in_the_subject_report(tmp_path, caplog):
    bundle = cohort.load_model()
    first, second, other_model = (preprocessed_session(tmp_path, ses) for ses in ("1", "2", "3"))
    gate_off = qc.parse_bounds("off")  # boxes, not heads
    scoring.score_sessions([first, other_model], tmp_path, bundle, TEMPLATE, gate_off, tmp_path / "logs")
    summary_path = tmp_path / layout.output_path(other_model.entities, "summary", TEMPLATE)
    summary = json.loads(summary_path.read_text())
    summary["Model"]["MetadataSHA256"] = "another model.json"
    summary_path.write_text(json.dumps(summary))

    results, _ = scoring.score_sessions([second], tmp_path, bundle, TEMPLATE, gate_off, tmp_path / "logs")  # a later run with --session-label 2
    with caplog.at_level(logging.WARNING):
        (report,), unwritten = participant.write_run_reports(tmp_path, [second], [first, second, other_model], results, {}, bundle.metadata,
                                                             TEMPLATE, {"run": "test"})  # fmt: skip
    page = (tmp_path / report).read_text()
    assert report.name == "sub-01.html" and "sub-01 ses-1" in page and "sub-01 ses-2" in page
    assert "sub-01 ses-3" not in page and f"left out of the reports: {summary_path.relative_to(tmp_path)}" in caplog.text
    # the session scored by the earlier run shows the gate's measures read back from its *_qc.json, as the one scored now does
    sections = {part.split("</h2>")[0]: part for part in page.split("<h2>")}
    for item in (first, second):
        volume = gate_record_of_a_box(tmp_path, item)["Measures"]["brain_volume_ml"]
        assert f"Image quality gate passed: brain_volume_ml {volume:g}, " in sections[item.label]


def test_the_report_of_a_scored_session_says_what_a_reader_needs(tmp_path):
    bundle = cohort.load_model()
    item = preprocessed_session(tmp_path, "1")
    results, _ = scoring.score_sessions([item], tmp_path, bundle, TEMPLATE, qc.parse_bounds("off"), tmp_path / "logs")
    for run, scored in (("20000101-000000_0123abcd", item.relpath), ("20000101-120000_89abcdef", "sub-01/anat/sub-01_T1w.nii.gz")):
        write_tsv(tmp_path / "logs" / f"run-{run}" / "scored.tsv", pd.DataFrame({"t1w": [scored]}))  # as each participant run lists them
    scoring_run = "20000101-000000_0123abcd"  # the last run that scored this session
    redraw = SimpleNamespace(command_line="bids_pscore ds out participant --reports-only", run_id="20000102-000000_4567cdef", reports_only=True)
    (report,), unwritten = participant.write_run_reports(tmp_path, [item], [item], results, {}, bundle.metadata, TEMPLATE,
                                                         participant.run_info(redraw, "now"))  # fmt: skip
    page = (tmp_path / report).read_text()
    # every figure opens on its own, full size, for a reader to zoom into
    shown = re.findall(r'<img src="([^"]+)"', page)
    assert shown and all(f'<a href="{src}"' in page for src in shown)
    summary = json.loads((tmp_path / layout.output_path(item.entities, "summary", TEMPLATE)).read_text())
    # every region the summary names is listed with its full name from the atlas table
    flagged = summary["AtrophicRegions"] + summary["DegenerativeRegions"]
    assert flagged, "the session should flag a region for this check to mean something"
    table = region_table().set_index("label")
    for label in flagged:  # TE1.0 and TE1.2 have no name in the atlas's table: their gyrus stands in
        name = table.loc[label, "name"] if isinstance(table.loc[label, "name"], str) else table.loc[label, "gyrus"]
        assert f"{label} ({name})" in html.unescape(page)
    # the input T1w: its file in the dataset, voxel size, dimensions and orientation from its header
    assert "<td>sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz</td>" in page
    assert "1.20 x 1.00 x 1.00 mm" in page and "10 x 12 x 14 voxels" in page and "LAS" in page
    # every output file of the session is linked, under a plain name rather than an internal key
    links = dict((href, text) for href, text in re.findall(r'<a href="([^"]+)">([^<]+)</a>', page))
    for key, path in results[0].paths.items():
        assert Path(path).as_posix() in links and key not in links.values()
    assert "cube_table" not in page and "mask_grid" not in page
    # captions say what is drawn: this model's weights are all positive, and the voxel map's tiny values are read in 1e-6
    assert min(bundle.metadata["cube_weights"]) > 0 and "negative" not in page
    assert "the scale (x 1e-6) stops" in page
    # each kind of flag with its count as the summary JSONs have it and its false-flag rate from the model card
    relevance = json.loads((tmp_path / layout.output_path(item.entities, "relevance_summary", TEMPLATE)).read_text())
    counts = {kind: int(n) for kind, n in re.findall(r"<tr><td>([^<]+)</td><td>[^<]+</td><td>(\d+)</td>", page)}
    assert counts == {"P-score degenerative regions (patent)": summary["NumberOfDegenerativeRegions"],
                      "relevance-weighted degenerative regions": relevance["NumberOfDegenerativeRegions"],
                      "atrophic regions against healthy people (normative)": summary["Normative"]["NumberOfAtrophicRegions"]}  # fmt: skip
    calibration = bundle.metadata["normative"]["calibration"]
    assert f"{calibration['false_flags_per_healthy_image']:.2f} per healthy image held out of the reference" in page
    # a banner that says no region is marked names the kind it speaks of
    assert bundle.metadata["reference"]["lambda"] >= 1 and "its P-score (patent) flags mark no region" in page
    # provenance: the run that scored the session (its log folder) and the --reports-only run that drew the report
    assert f"<tr><td>scored by run</td><td>{scoring_run} (its logs: logs/run-{scoring_run}/)" in page
    assert "<th>the run that drew this report</th>" in page
    assert "20000102-000000_4567cdef: --reports-only drew the reports again from the outputs on disk and keeps no log folder" in page
    assert links[layout.output_path(item.entities, "region_table", TEMPLATE).as_posix()] == "region P-scores (TSV)"
    # the gate's measures as the real gate wrote them, and where its record is
    measures = gate_record_of_a_box(tmp_path, item)["Measures"]
    assert results[0].qc == measures
    shown = f"brain_volume_ml {measures['brain_volume_ml']:g}, template_correlation {measures['template_correlation']:g}, wm_gm_ratio 1"
    assert f"Image quality gate passed: {shown} (<code>sub-01/ses-1/anat/sub-01_ses-1_qc.json</code>)." in page
    # the box lies far from the normative reference: its flags are counted with why, their list folded
    assert not summary["Normative"]["Reliable"] and summary["Normative"]["NumberOfAtrophicRegions"] > 20
    folded = re.search(r"<td><details><summary>([^<]+)</summary>([^<]+)</details></td>", page)
    assert folded and folded[1].startswith("not reliable: this scan is far from the normative reference (median |z|")
    assert html.unescape(folded[2]) == named_regions(summary["Normative"]["AtrophicRegions"])
