"""The quality gate, the scoring and the figures of each T1w as a workflow (``init_scoring_wf``) in the
participant workflow, after its preprocessing sink: they run in MultiProc's workers and as cluster jobs,
and nipype's cache decides what a rerun reuses.

Per T1w, in ``<ident>_scoring_wf``:

- ``images`` (always runs, in the main process): the sha256 of the preprocessed images the sink wrote
  (the grid image, its mask, the mask in the T1w's space, the grid image's sidecar with its intensity
  map): what the nodes below hash of them (they take the output folder as a string, not hashed).
- ``quality_gate``: the gate's record under the run's bounds (``cohort.gate_record``), its JSON written
  in the node's folder.
- ``scoring``: ensemble, P-scores, class domain, normative deviations and relevance-weighted scores
  (``scoring.score_t1w``), its derivatives written in the node's folder in the output folder's layout.
  The model comes as its folder and its checksum: the node loads it in the worker (once per process),
  and the checksum, not the folder, is hashed; so are the bounds' verdict, the age and the sex.
- ``figures``: the session's score figures (``figures``), drawn from the scoring node's maps. Where they
  cannot be drawn it leaves none and says why (``not_drawn``): the T1w's scores stand, and the report
  tries to draw them again.
- ``score_files`` (always runs, in the main process): the set copied into the output folder, each file
  atomically and left as it is where it holds the same bytes; a file of an earlier set that this one
  does not hold is removed, the summary first, and the summary written last. A deleted output is
  copied again from the work folder, without scoring again.

Reuse is nipype's: the nodes' inputs (image checksums, model checksum, bounds, age, sex, the T1w's
name, and a checksum of the scoring code and its tools) are hashed; the workflow's folder names the
package version, the preprocessing's code and the work folder's place.
"""

import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from nipype.interfaces.base import BaseInterfaceInputSpec, SimpleInterface, TraitedSpec, traits
from nipype.pipeline import engine as pe

from ..errors import ModelError, PscoreError, in_one_line

# the nodes of a T1w's scoring, as the progress lines name them; a failure in any of them is the T1w's scoring's
SCORING_NODES = ("images", "quality_gate", "scoring", "figures", "score_files")
# peak memory of the scoring node (GB, whole worker process: torch, the ensemble, the normative reference)
SCORING_MEM_GB = 1.5
# the files of a T1w's preprocessing that its gate and scoring read
READ_IMAGES = ("t1w_grid", "mask_grid", "mask_native")
# the code the nodes run and the tools it calls: hashed with their inputs (the workflow's folder names the
# preprocessing's code only), so that a changed scoring step scores again without preprocessing again
PACKAGE = Path(__file__).resolve().parents[1]
SCORING_CODE = ("scoring.py", "workflows/scoring.py", "cohort.py", "qc.py", "pscore.py", "normative.py", "inference.py", "figures.py", "viz.py",
                "atlas.py", "grid.py", "results.py", "derivatives/*.py", "model/*.py")  # fmt: skip
SCORING_TOOLS = ("matplotlib", "nibabel", "numpy", "pandas", "scipy", "torch")


def scoring_code():
    """SHA-256 (hex) of SCORING_CODE and the versions of SCORING_TOOLS."""
    from ..preprocess.workflow import code_checksum

    files = (path for pattern in SCORING_CODE for path in sorted(PACKAGE.glob(pattern)))
    return code_checksum(((path.relative_to(PACKAGE).as_posix(), path) for path in files), SCORING_TOOLS)


class ScoringError(PscoreError):
    """A T1w's scoring failed in its node (its message names the T1w and what to do)."""


def _failed(item, exc):
    """Raise what a scoring node's failure says: a PscoreError as it is, another error in one line with the T1w and the fix."""
    from ..scoring import failure_message

    if isinstance(exc, PscoreError):
        raise exc
    raise ScoringError(failure_message(item, exc)) from exc


def _fresh(folder):
    """The folder a node writes its files in, emptied of an earlier run's."""
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def _written(root):
    """{relative path: sha256} of every file under ``root``."""
    from ..model.bundle import sha256

    root = Path(root)
    return {p.relative_to(root).as_posix(): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


class _SessionSpec(BaseInterfaceInputSpec):
    source_dir = traits.Str(mandatory=True, nohash=True, desc="the output folder, where the sink wrote the preprocessed images")
    t1w_path = traits.Str(mandatory=True, nohash=True, desc="the raw T1w (named in messages)")
    t1w_relpath = traits.Str(mandatory=True, desc="the raw T1w in its dataset")
    entities = traits.Dict(mandatory=True)
    template = traits.Str(mandatory=True)
    images = traits.Dict(mandatory=True, desc="sha256 of the preprocessed images (PreprocessedImages): what the node hashes of them")
    code = traits.Str(mandatory=True, desc="scoring_code(): the nodes' code and tools")

    def item(self):
        from ..bids import T1wInput

        return T1wInput(Path(self.t1w_path), self.t1w_relpath, dict(self.entities))


class _ImagesInputSpec(BaseInterfaceInputSpec):
    source_dir = traits.Str(mandatory=True)
    entities = traits.Dict(mandatory=True)
    template = traits.Str(mandatory=True)
    after = traits.Any(nohash=True, desc="the preprocessing sink's files: only orders this node after it")


class _ImagesOutputSpec(TraitedSpec):
    checksums = traits.Dict()


class PreprocessedImages(SimpleInterface):
    """The sha256 of the preprocessed images a T1w's gate and scoring read ("missing" for one that is not there: the gate says so)."""

    input_spec = _ImagesInputSpec
    output_spec = _ImagesOutputSpec

    def _run_interface(self, runtime):
        from ..derivatives import layout
        from ..model.bundle import sha256

        images = layout.session_outputs(self.inputs.entities, self.inputs.template, layout.PREPROCESSING)
        files = {key: images[key] for key in READ_IMAGES} | {"t1w_grid_sidecar": layout.sidecar_path(images["t1w_grid"])}
        checksums = {}
        for key, relpath in files.items():
            try:
                checksums[key] = sha256(Path(self.inputs.source_dir) / relpath)
            except OSError:
                checksums[key] = "missing"
        self._results["checksums"] = checksums
        return runtime


class _GateInputSpec(_SessionSpec):
    bounds = traits.Dict(mandatory=True, desc="--qc-thresholds")


class _GateOutputSpec(TraitedSpec):
    passed = traits.Bool()
    root = traits.Str(desc="the folder holding the gate's record, in the output folder's layout")
    files = traits.List(traits.Str)


class QualityGate(SimpleInterface):
    """The quality gate's record of one preprocessed T1w (``scoring.quality_gate``)."""

    input_spec = _GateInputSpec
    output_spec = _GateOutputSpec

    def _run_interface(self, runtime):
        from ..scoring import quality_gate

        item, root = self.inputs.item(), _fresh(Path(runtime.cwd) / "out")
        try:
            record = quality_gate(item, self.inputs.source_dir, self.inputs.template, self.inputs.bounds, target_dir=root)
        except Exception as exc:  # noqa: BLE001 - said as the participant level says a failed scoring
            _failed(item, exc)
        self._results.update(passed=bool(record["Passed"]), root=str(root), files=list(_written(root)))
        return runtime


@lru_cache(maxsize=2)
def worker_model(folder, checksum):
    """The ScoringModel of the bundle in ``folder``, loaded once per process; it must be the one the run
    started with (``checksum``: its metadata_sha256)."""
    from ..model.bundle import BundleError, load_bundle
    from ..scoring import scoring_model

    try:
        bundle = load_bundle(folder)
    except BundleError as exc:
        raise ModelError(f"{exc} (--model)") from None
    if bundle.metadata["metadata_sha256"] != checksum:
        raise ModelError(f"{folder}: the model changed while the run went on (its metadata_sha256 is not the one the run started with); "
                         "run the participant level again")  # fmt: skip
    return scoring_model(bundle)


class _ScoreInputSpec(_SessionSpec):
    passed = traits.Bool(mandatory=True, desc="whether the T1w passed the quality gate (nothing is scored otherwise)")
    model_dir = traits.Str(mandatory=True, nohash=True)
    model_checksum = traits.Str(mandatory=True, desc="model.json's metadata_sha256")
    normative_checksum = traits.Str("", usedefault=True, desc="the normative reference's sha256, empty without one")
    age = traits.Float(mandatory=True, desc="years, NaN when unknown")
    sex = traits.Str(mandatory=True, desc="as the dataset writes it, 'n/a' when unknown")
    num_threads = traits.Int(mandatory=True, nohash=True, desc="torch's threads (those of the run's main process: the same bits)")


class _ScoreOutputSpec(TraitedSpec):
    root = traits.Str(desc="the folder holding the derivatives, in the output folder's layout")
    files = traits.Dict(desc="{relative path: sha256} of every derivative written")
    pid = traits.Int(desc="the process that scored it")


class ScoreT1w(SimpleInterface):
    """Ensemble, P-scores, class domain, normative deviations, relevance-weighted scores and their
    derivatives of one T1w that passed the gate (``scoring.score_t1w``); nothing for one that did not."""

    input_spec = _ScoreInputSpec
    output_spec = _ScoreOutputSpec

    def _run_interface(self, runtime):
        import torch

        from ..scoring import score_t1w

        item, root = self.inputs.item(), _fresh(Path(runtime.cwd) / "out")
        if self.inputs.passed:
            threads = torch.get_num_threads()
            torch.set_num_threads(self.inputs.num_threads)
            try:
                model = worker_model(self.inputs.model_dir, self.inputs.model_checksum)
                score_t1w(item, self.inputs.source_dir, self.inputs.template, model, {"Measures": None}, self.inputs.age, self.inputs.sex,
                          target_dir=root)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - said as the participant level says a failed scoring
                _failed(item, exc)
            finally:
                torch.set_num_threads(threads)  # a node run in the main process (Linear) leaves its threads as they were
        self._results.update(root=str(root), files=_written(root), pid=os.getpid())
        return runtime


class _FiguresInputSpec(_SessionSpec):
    scores_root = traits.Str(mandatory=True, nohash=True)
    scores = traits.Dict(mandatory=True, desc="the scoring node's files: {relative path: sha256}")


class _FiguresOutputSpec(TraitedSpec):
    root = traits.Str()
    files = traits.List(traits.Str)
    not_drawn = traits.Str(desc="why its figures were not drawn, in one line; empty where they were")


class ScoreFigures(SimpleInterface):
    """The figures of one scored T1w (``figures``): P-scores, relevance-weighted ones, normative deviation.
    A failure to draw them does not fail the T1w (its scores stand, as when the report drew them): the node
    leaves no figure and says why in ``not_drawn``; the participant level says so and the report tries again."""

    input_spec = _FiguresInputSpec
    output_spec = _FiguresOutputSpec

    def _run_interface(self, runtime):
        from ..derivatives import layout
        from ..derivatives.records import Summary
        from ..figures import draw_normative_figure, draw_score_figures, load

        item, root = self.inputs.item(), _fresh(Path(runtime.cwd) / "out")
        paths = layout.session_outputs(item.entities, self.inputs.template)
        source, scored = Path(self.inputs.scores_root), set(self.inputs.scores)
        not_drawn = ""
        if Path(paths["summary"]).as_posix() in scored:
            try:
                image = load(Path(self.inputs.source_dir) / paths["t1w_grid"])
                mask = load(Path(self.inputs.source_dir) / paths["mask_grid"]) > 0
                summary = Summary.from_json(source / paths["summary"])
                draw_score_figures(source, root, image, mask, paths, summary.lambda_, "")
                normative = [paths[k] for k in layout.session_outputs(item.entities, self.inputs.template, layout.NORMATIVE)]
                if summary.normative and all(Path(p).as_posix() in scored for p in normative):
                    draw_normative_figure(source, root, image, paths)
                relevance = layout.session_outputs(item.entities, self.inputs.template, layout.RELEVANCE)
                if all(Path(p).as_posix() in scored for p in relevance.values()):
                    weighted = Summary.from_json(source / paths["relevance_summary"], relevance=True)
                    draw_score_figures(source, root, image, mask, paths, weighted.lambda_, "relevance")
            except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn costs the T1w its figures, not its scores
                not_drawn = in_one_line(exc)
                root = _fresh(root)  # no figure of a set half drawn
        self._results.update(root=str(root), files=list(_written(root)), not_drawn=not_drawn)
        return runtime


class _SinkInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    entities = traits.Dict(mandatory=True)
    template = traits.Str(mandatory=True)
    gate_root = traits.Str(mandatory=True)
    gate_files = traits.List(traits.Str, mandatory=True)
    scores_root = traits.Str(mandatory=True)
    score_files = traits.Dict(mandatory=True)
    figures_root = traits.Str(mandatory=True)
    figure_files = traits.List(traits.Str, mandatory=True)


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str)


class ScoresSink(SimpleInterface):
    """One T1w's gate record, scores and figures copied into the output folder as a set (see the module)."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        import filecmp

        from ..derivatives import layout
        from ..fileio import copy_file

        out, entities, template = Path(self.inputs.output_dir), self.inputs.entities, self.inputs.template
        new = {rel: Path(self.inputs.gate_root) / rel for rel in self.inputs.gate_files}
        new |= {rel: Path(self.inputs.scores_root) / rel for rel in self.inputs.score_files}
        new |= {rel: Path(self.inputs.figures_root) / rel for rel in self.inputs.figure_files}
        summary = layout.output_path(entities, "summary", template).as_posix()
        # the summary, which the group level and the reports take for a whole set, goes first where it
        # changes, and comes last: a run killed in between leaves no new tables beside an old summary
        if (out / summary).is_file() and not (summary in new and filecmp.cmp(new[summary], out / summary, shallow=False)):
            (out / summary).unlink()
        for relpath in layout.with_sidecars(layout.session_outputs(entities, template, *layout.SCORING_STEPS)):
            if relpath.as_posix() not in new and (out / relpath).is_file():  # an earlier set's file that this one has not
                (out / relpath).unlink()
        for relpath in sorted(new, key=lambda p: p == summary):
            copy_file(new[relpath], out / relpath)
        self._results["out_files"] = [str(out / p) for p in new]
        return runtime


@dataclass(frozen=True)
class ScoringSettings:
    """What every T1w's scoring nodes take from the run: the output folder, the template, the model (its
    folder and checksums), the gate's bounds, each T1w's (age, sex) by ident, torch's threads, and the CPUs
    and memory the scoring node asks the scheduler for."""

    output_dir: str
    template: str
    model_dir: str
    model_checksum: str
    normative_checksum: str
    qc_bounds: dict
    covariates: dict = field(default_factory=dict)
    num_threads: int = 1
    code: str = ""  # scoring_code()
    n_procs: int = 1
    mem_gb: float = SCORING_MEM_GB

    @classmethod
    def of(cls, output_dir, template, bundle, qc_bounds, covariates, n_cpus=None, mem_gb=None):
        """``n_cpus`` and ``mem_gb``: what the run gives MultiProc (--n-cpus, --mem), None where unbounded.
        The scoring node asks for no more: MultiProc refuses a whole workflow with a step that asks for more
        ("Insufficient resources available for job": with --n-cpus 1, as one job per subject, nothing ran).
        Its torch threads stay the main process's whatever --n-cpus, so that every run writes the same bits."""
        import torch

        meta = bundle.metadata
        threads = torch.get_num_threads()
        return cls(str(output_dir), template, str(bundle.folder), meta["metadata_sha256"], (meta.get("normative") or {}).get("sha256") or "",
                   dict(qc_bounds), dict(covariates), threads, scoring_code(), min(threads, n_cpus or threads),
                   min(SCORING_MEM_GB, mem_gb or SCORING_MEM_GB))  # fmt: skip

    def attach(self, wf, t1w, after=None):
        """Add ``t1w``'s scoring workflow (``init_scoring_wf``) to ``wf``, after ``after`` (node, output: its
        preprocessing sink's files) where given: ``init_participant_wf``'s ``extend``."""
        sub = init_scoring_wf(self, t1w)
        if after is None:
            wf.add_nodes([sub])
        else:
            wf.connect(after[0], after[1], sub, "images.after")
        return sub


def init_scoring_wf(settings, t1w, name=None):
    """Preprocessed T1w -> its gate record, scores and figures in the output folder (SPEC sections 4, 5,
    8 and 10), for the T1w ``t1w`` under the run's ``settings`` (``ScoringSettings``); ``name`` defaults
    to ``<ident>_scoring_wf``, which Progress recognises.

    Input: ``images.after`` (the preprocessing sink's files: it only orders the workflow after them).
    The nodes are those of the module's docstring; ``score_files`` writes the outputs.
    """
    wf = pe.Workflow(name=name or f"{t1w.ident}_scoring_wf")
    session = dict(source_dir=settings.output_dir, t1w_path=str(t1w.path), t1w_relpath=t1w.relpath, entities=dict(t1w.entities),
                   template=settings.template, code=settings.code)  # fmt: skip
    age, sex = settings.covariates.get(t1w.ident, (float("nan"), "n/a"))
    images = pe.Node(PreprocessedImages(source_dir=settings.output_dir, entities=dict(t1w.entities), template=settings.template), name="images",
                     run_without_submitting=True)  # fmt: skip
    images.overwrite = True  # the images may have been written anew: their checksums are taken every run
    gate = pe.Node(QualityGate(bounds=settings.qc_bounds, **session), name="quality_gate")
    score = pe.Node(
        ScoreT1w(model_dir=settings.model_dir, model_checksum=settings.model_checksum, normative_checksum=settings.normative_checksum,
                 age=age, sex=sex, num_threads=settings.num_threads, **session),
        name="scoring", n_procs=settings.n_procs, mem_gb=settings.mem_gb,
    )  # fmt: skip
    # nipype sets a node's num_threads input to its n_procs: torch's threads are the main process's whatever the node
    # asks the scheduler for (ScoringSettings.of), or a run with --n-cpus 1 writes other bits
    score.inputs.num_threads = settings.num_threads
    figures = pe.Node(ScoreFigures(**session), name="figures")
    sink = pe.Node(ScoresSink(output_dir=settings.output_dir, entities=dict(t1w.entities), template=settings.template), name="score_files",
                   run_without_submitting=True)  # fmt: skip
    sink.overwrite = True  # outputs must be copied again if someone deleted them, even when nothing upstream changed
    wf.connect([
        (images, gate, [("checksums", "images")]),
        (images, score, [("checksums", "images")]),
        (gate, score, [("passed", "passed")]),
        (images, figures, [("checksums", "images")]),
        (score, figures, [("root", "scores_root"), ("files", "scores")]),
        (gate, sink, [("root", "gate_root"), ("files", "gate_files")]),
        (score, sink, [("root", "scores_root"), ("files", "score_files")]),
        (figures, sink, [("root", "figures_root"), ("files", "figure_files")]),
    ])  # fmt: skip
    return wf
