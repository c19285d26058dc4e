"""What every column of the output tables means: the descriptions their JSON sidecars give (of the
session tables, the atlas's look-up table and the group tables), with units where a column has one."""

from ..pscore import AD_THRESHOLD

# between the labels of the regions listed in one cell: a label may hold a space ("L.TE1.0 and TE1.2")
REGION_SEPARATOR = "; "

CUBE_COLUMNS = {
    "cube": "cube index c = ix * 30 + iy * 5 + iz (SPEC section 3)",
    "ix": "cube position along the grid's first axis (0-4)",
    "iy": "cube position along the grid's second axis (0-5)",
    "iz": "cube position along the grid's third axis (0-4)",
    "i_start": "first grid voxel of the cube along the first axis", "i_stop": "one past its last voxel",
    "j_start": "first grid voxel along the second axis", "j_stop": "one past its last voxel",
    "k_start": "first grid voxel along the third axis", "k_stop": "one past its last voxel",
    "x_min_mm": "MNI x of the cube's voxel centres, minimum", "x_max_mm": "maximum",
    "y_min_mm": "MNI y of the cube's voxel centres, minimum", "y_max_mm": "maximum",
    "z_min_mm": "MNI z of the cube's voxel centres, minimum", "z_max_mm": "maximum",
    "brain_voxels": "M_ic: brain-mask voxels of this image inside the cube",
    "selected": "whether the meta-classifier uses this cube's base classifier",
    "weight": "w_c: the meta-classifier's 1-D convolution weight of the cube (n/a if not selected)",
    "p_ad": "p_ic: the cube's base classifier's probability of AD",
    "p_cube": "P_cube = w_c * p_ic (0 if not selected)",
}  # fmt: skip


REGION_COLUMNS = {
    "index": "Brainnetome region index (odd: left, even: right)",
    "label": "region label, hemisphere first (e.g. L.mAmyg)",
    "name": "full region name",
    "hemisphere": "L or R",
    "lobe": "lobe of the region",
    "gyrus": "gyrus of the region",
    "p_region": "P_region: sum of P_voxel over the region divided by its voxel count (raw, signed)",
    "p_region_norm": "P_region normalised by the model's reference min and max, clipped to [0, 1]",
    "degenerative": "whether p_region_norm exceeds the model's lambda",
}


# units of the columns that have one; the others are indices, labels, flags or unitless scores
UNITS = {
    **{f"{a}_{e}_mm": "mm" for a in "xyz" for e in ("min", "max")},
    **{f"{a}_{e}": "voxel index" for a in "ijk" for e in ("start", "stop")},
    "brain_voxels": "voxels", "p_ad": "probability",
    "p_cube": "arbitrary (signed)", "weight": "arbitrary (signed)", "p_region": "arbitrary (signed) per voxel",
    "p_region_norm": "normalised score in [0, 1]",
}  # fmt: skip


# BIDS defines the dseg table's "index" (the label value in the image) and "name"
ATLAS_COLUMNS = {
    "name": "region label, hemisphere first (e.g. L.mAmyg); the label column of the region tables",
    "abbreviation": "Brainnetome's abbreviation of the region",
    "full_name": "full region name",
    "hemisphere": "L or R",
    "lobe": "lobe of the region",
    "gyrus": "gyrus of the region",
    "mni_center": "Brainnetome's MNI coordinates of the region's centre (x y z, mm)",
}


NORMATIVE_COLUMNS = {
    "index": REGION_COLUMNS["index"], "label": REGION_COLUMNS["label"], "name": REGION_COLUMNS["name"],
    "hemisphere": REGION_COLUMNS["hemisphere"], "lobe": REGION_COLUMNS["lobe"], "gyrus": REGION_COLUMNS["gyrus"],
    "grey_level": "mean preprocessed grey level of the region (what the networks see)",
    "grey_level_expected": "the healthy mean grey level for the person's age and sex (the normative reference), shifted by the "
                           "brain's overall level (the summary's MedianRegionZ spreads): what the region would show without regional loss",
    "grey_level_z": "(grey_level - grey_level_expected) / the reference's robust spread: the region's z relative to the median z of the "
                    "brain's regions; negative: less tissue than the rest of the brain would say",
    "pscore": "normalised region P-score (as in the region table of the P-scores)",
    "pscore_expected": "the healthy normalised region P-score for the person's age and sex",
    "pscore_z": "-(pscore - pscore_expected) / the reference's robust spread; negative: more degeneration than expected",
    "atrophic": "whether grey_level_z is below the reference's calibrated threshold",
}  # fmt: skip


GROUP_COLUMNS = {
    "participant_id": "subject", "session_id": "session (n/a without sessions)", "t1w": "the scored T1w's name, without suffix",
    "acq_time": "acquisition time", "time_source": "file the acquisition time came from",
    "order_by": "what the subject's sessions are ordered by: acq_time, or session label when a time is missing",
    "session_index": "position of the session in the subject's order (0 first)",
    "years_from_first": "years since the subject's first session (n/a when ordered by label)",
    "diagnosis": "diagnosis from --label-column", "ad_probability": "the meta-classifier's probability of AD",
    "predicted_class": f"AD if ad_probability >= {AD_THRESHOLD:g}, else control",
    "class_reliable": "the session lies within the distance threshold of the heads the model's class was set on (its class domain); "
                      "false (e.g. another scanner): its AD probability and predicted class are not reliable; n/a: not checked (a model "
                      "without a class domain)",
    "whole_brain_pscore_reference": "sum of the region scores normalised by the model's reference cohort (0-246)",
    "whole_brain_pscore_cohort": "sum of the region scores normalised over the analysed sessions (0-246)",
    "normalisation": "normalisation of the P-scores (and of patent flags)",
    "flags": "which flags n_degenerative, degenerative_regions and the other tables count: normative or patent (see Flags)",
    "grey_level_z": "the region's grey-level z against the model's normative reference (negative: less tissue than expected)",
    "atrophic": "grey_level_z below the normative reference's calibrated threshold",
    "normative_reliable": "the session lies within the normative reference's distance threshold; false (e.g. another scanner): its atrophic "
                          "flags are not reliable, and normative flags counted here leave them out",
    "n_degenerative": "number of flagged regions (see Flags)",
    "degenerative_regions": f"labels of the flagged regions, {REGION_SEPARATOR!r} between them (see Flags)",
    "index": "Brainnetome region index", "label": "region label (hemisphere first, e.g. L.mAmyg)", "name": "full region name",
    "p_region": "raw region P-score", "p_region_norm_reference": "region score normalised by the model's reference cohort",
    "p_region_norm_cohort": "region score normalised by the minimum and maximum over the analysed sessions",
    "degenerative": "the region is flagged (see Flags)",
    "rank": "rank by frequency among sessions predicted AD (1: the most frequent; regions as frequent share a rank; n/a: never degenerative there)",
    "sessions_predicted_ad": "sessions predicted AD", "degenerative_predicted_ad": "of them, sessions in which the region is degenerative",
    "frequency_predicted_ad": "share of sessions predicted AD in which the region is degenerative",
    "sessions_labelled_ad": "sessions labelled AD", "degenerative_labelled_ad": "of them, sessions in which the region is degenerative",
    "frequency_labelled_ad": "share of sessions labelled AD in which the region is degenerative",
    "regions": "the set of regions, joined by ' + '", "size": "number of regions in the set",
    "support": "share of sessions predicted AD in which all regions of the set are degenerative",
    "sessions": "number of sessions (of the set's support, or of the subject)",
    "unit": "unit of slope and onset, one for the whole group: year (acquisition times of every followed subject known) or session",
    "first": "the subject's first session", "last": "the subject's last session",
    "slope": "least-squares slope of the normalised region score per unit", "start": "score at the first session",
    "end": "score at the last session", "onset_session": "first session with the region above lambda (n/a: never)",
    "onset": "time of that session from the subject's first (0: already above lambda at the first)",
    "order": "order of involvement across subjects (regions as early, in as many subjects, share an order; 0: never involved)",
    "median_onset": "median onset over involved subjects",
    "mean_onset": "mean onset over involved subjects", "subjects_involved": "subjects in which the region crosses lambda",
    "subjects_followed": "subjects with two or more sessions", "share_involved": "subjects_involved / subjects_followed",
    "n_ad": "subjects labelled AD (first session each)", "n_control": "subjects labelled control (first session each)",
    "median_ad": "median normalised score in AD", "median_control": "median normalised score in controls",
    "u": "Mann-Whitney U of AD against control", "p": "two-sided p value",
    "rank_biserial_r": "rank-biserial correlation (effect size; > 0: higher in AD)",
    "q_fdr": "Benjamini-Hochberg false-discovery-rate q over the tested regions",
}  # fmt: skip


FLAG_DESCRIPTIONS = {
    "normative": "degenerative = atrophic against the model's normative reference: grey-level z below its calibrated threshold "
                 "(SPEC 10); trajectories follow that z",
    "patent": "degenerative = normalised P-score above lambda (SPEC 5); trajectories follow the normalised score",
}  # fmt: skip
