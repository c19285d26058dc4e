"""One T1w's results as the participant level and its reports hold them (``SessionResult``): read
back from its outputs, checked against the model that scored it, and said in its RESULT line."""

import logging
from dataclasses import dataclass

from . import bids
from .atlas import N_REGIONS
from .derivatives import layout
from .progress import RESULT

# the participant level's messages: the run's debug log names them as it did before results had a module of their own
log = logging.getLogger(f"{__package__}.participant")


@dataclass
class SessionResult:
    t1w: bids.T1wInput
    paths: dict  # every derivative of the session ({key of layout.SESSION_OUTPUTS: path}), relative to the output folder
    whole: float
    ad_probability: float
    predicted_class: str
    degenerative: list
    relevance: dict | None = None  # whole-brain score, lambda and degenerative regions of the relevance-weighted map
    model_checksum: str | None = None  # model.json's metadata_sha256: the weights, the reference, its rule and class offset
    qc: dict | None = None  # the quality gate's measures
    normative: dict | None = None  # the summary's "Normative" record (SPEC 10), None without a reference
    class_reliable: bool | None = None  # the summary's "ClassReliable": None where the model has no class domain
    class_domain: dict | None = None  # the summary's "ClassDomain" (distance to the heads the class was set on)
    reused: bool = False  # this run's workflow took its scores from the work folder's cache (same inputs, model and settings)
    figures_drawn: bool = False  # its figures were drawn by this run's workflow (the report draws only a missing one)


def log_result(result):
    """The RESULT line of a scored session (and the cautions of its class and its normative comparison)."""
    from .derivatives.records import class_mark

    mark = class_mark(result.class_domain)
    log.log(
        RESULT,
        "%s: whole-brain P-score %.1f of %d, AD probability %.2f (%s%s), %d degenerative region(s)%s%s",
        result.t1w.label,
        result.whole,
        N_REGIONS,
        result.ad_probability,
        result.predicted_class,
        f"; {mark}" if mark else "",
        len(result.degenerative),
        "" if result.normative is None else f"; {result.normative['NumberOfAtrophicRegions']} atrophic against healthy people (normative)",
        "; scores reused from the work folder (same inputs, model and settings)" if result.reused else "",
    )
    if mark:
        log.warning("%s: %s", result.t1w.label, result.class_domain["Caution"])
    if result.normative is not None and "Caution" in result.normative:
        log.warning("%s: %s", result.t1w.label, result.normative["Caution"])


def read_session_result(output_dir, t1w, template, required=(layout.PREPROCESSING, layout.PSCORE)):
    """A scored session's SessionResult read back from its outputs, or None if it has none (``required``:
    the steps whose files must all be there; the workflow that has just scored it asks for its scores only,
    as the scoring did)."""
    import json

    from .derivatives.records import Summary

    paths = layout.session_outputs(t1w.entities, template, layout.PREPROCESSING, layout.PSCORE)
    if not all((output_dir / p).is_file() for p in layout.session_outputs(t1w.entities, template, *required).values()):
        return None
    summary = Summary.from_json(output_dir / paths["summary"])
    relevance = None
    relevance_paths = layout.session_outputs(t1w.entities, template, layout.RELEVANCE)
    if all((output_dir / p).is_file() for p in relevance_paths.values()):
        paths.update(relevance_paths)
        weighted = Summary.from_json(output_dir / relevance_paths["relevance_summary"], relevance=True)
        relevance = {"whole": weighted.whole, "lambda": weighted.lambda_, "degenerative": weighted.degenerative}
    gate = layout.output_path(t1w.entities, "qc")
    measures = None
    if (output_dir / gate).is_file():
        paths["qc"] = gate
        measures = json.loads((output_dir / gate).read_text())["Measures"]
    normative_paths = layout.session_outputs(t1w.entities, template, layout.NORMATIVE)
    if summary.normative is not None and all((output_dir / p).is_file() for p in normative_paths.values()):
        paths.update(normative_paths)
    return SessionResult(t1w, paths, summary.whole, summary.ad_probability, summary.predicted_class, summary.degenerative, relevance,
                         summary.model_checksum, measures, summary.normative, summary.class_reliable, summary.class_domain)  # fmt: skip


def scored_by(result, metadata):
    """Whether a session read back from disk was scored by this model.json: these weights, this normative
    reference with its rule and threshold, this class offset (a reference rebuilt from the same controls
    can hold the same statistics under another rule)."""
    return result.model_checksum == metadata["metadata_sha256"]


def earlier_results(output_dir, t1w_inputs, template, metadata):
    """The sessions of ``t1w_inputs`` that earlier runs scored with this model, read back from the output
    folder; those scored by another model are left out, with a line naming them."""
    results = []
    for t1w in t1w_inputs:
        try:
            result = read_session_result(output_dir, t1w, template)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged by hand or by a killed older version
            log.warning(
                "%s: its outputs cannot be read back (%s: %s) and are left out of the report; score it again", t1w.label, type(exc).__name__, exc
            )
            continue
        if result is not None:
            results.append(result)
    ours, other = [], []
    for result in results:
        (ours if scored_by(result, metadata) else other).append(result)
    if other:
        log.warning("%d earlier session(s) scored by another model (or normative reference) are left out of the reports: %s; "
                    "score them again with this model", len(other), ", ".join(str(r.paths["summary"]) for r in other))  # fmt: skip
    return ours
