"""Workflow factories: one preprocessing workflow per T1w, all of them in one run."""

import hashlib
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from ..config import SKULL_STRIP_MODES
from ..grid import GRID_TEXT
from .interfaces import (
    DerivativesSink,
    LoadT1w,
    N4BiasCorrect,
    NormaliseIntensity,
    OnSourceGrid,
    PreprocReportlets,
    RegisterToTemplate,
    ResampleToGrid,
    SkullStrip,
    SmoothInMask,
)

# peak memory of the heavy steps (GB, whole worker process), measured on a 1 mm head of
# 190 x 242 x 269 voxels: what each node asks of MultiProc's --mem budget
STEP_MEM_GB = {"n4": 1.2, "skullstrip": 1.3, "register": 1.1}
PREPROC_OUTPUTS = (
    "t1w_grid",
    "mask_grid",
    "mask_native",
    "xfm_affine",
    "xfm_warp",
    "input_skull_stripped",
    "intensity_map",
    "figure_brainmask",
    "figure_registration",
)


# what the steps' results depend on beside their inputs: this package's code that they run, and
# the tools they call
PACKAGE = Path(__file__).resolve().parents[1]
STEP_CODE = (*sorted(Path(__file__).resolve().parent.glob("*.py")), PACKAGE / "grid.py", PACKAGE / "viz.py", PACKAGE / "model" / "preprocessing.py")
STEP_TOOLS = ("antspyx", "deepbet", "nilearn", "nibabel", "nipype", "numpy", "scipy", "torch")


def code_checksum(files, tools):
    """SHA-256 (hex) of code and the tools it calls: ``files`` as (name, path) pairs, each file's name and
    bytes, then the installed version of each of ``tools`` ("none" where it is not installed)."""
    digest = hashlib.sha256()
    for name, path in files:
        digest.update(name.encode() + b"\0" + Path(path).read_bytes())
    for tool in tools:
        try:
            digest.update(f"{tool}={version(tool)}".encode())
        except PackageNotFoundError:
            digest.update(f"{tool}=none".encode())
    return digest.hexdigest()


def code_fingerprint(extra_code=()):
    """SHA-256 (hex) of the steps' code and tools' versions, and of ``extra_code`` (paths)."""
    return code_checksum(((Path(path).name, path) for path in (*STEP_CODE, *extra_code)), STEP_TOOLS)


def workflow_name(work_dir):
    """The top workflow's name, which names its folder in the work folder: the package version, a
    fingerprint of the steps' code and tools, and one of the work folder's absolute path. nipype
    reuses a step's cached result when its inputs are the same, whatever its code, so a changed
    step must find a folder of its own; and its cached results name their files by absolute path,
    so a work folder moved, or reached by another path (a scratch mounted elsewhere on another
    node), must too: the old results point where it no longer is."""
    from .. import __version__

    where = hashlib.sha256(str(Path(work_dir).resolve()).encode()).hexdigest()[:8]
    return f"bids_pscore_{re.sub(r'[^A-Za-z0-9]', '_', __version__)}_{code_fingerprint()[:12]}_{where}_wf"


SKULL_STRIP_TEXT = {
    "auto": "skull-stripped with deepbet (its network at {size} voxels a side; inputs that were already skull-stripped kept their own brain)",
    "force": "skull-stripped with deepbet (its network at {size} voxels a side)",
    "skip": "taken as already skull-stripped (its non-zero region is the brain)",
}


def preproc_description(params, skull_strip):
    """The preprocessing as a methods paragraph (the workflow's ``__desc__``, in the citation boilerplate),
    worded from the parameters that run it."""
    return (
        f"The T1w image was checked and reoriented to RAS+, corrected for intensity "
        f"non-uniformity with N4 (ANTs, fitted at about {params.n4_shrink_mm:g} mm), and "
        f"{SKULL_STRIP_TEXT[skull_strip].format(size=params.skullstrip_network_size)}. "
        f"The brain was registered to the {params.template} template (nilearn) with rigid and affine stages on a "
        f"{params.registration_mm:g} mm grid and SyN on the 1.5 mm grid (ANTs, one call, single-threaded, seed {params.registration_seed}), "
        f"resampled onto the {GRID_TEXT} SPM12/CAT12 grid with "
        f"{params.interpolation} interpolation, smoothed inside the brain mask with a "
        f"{params.fwhm_mm:g} mm FWHM Gaussian and {params.standardisation_text}."
    )


def init_preproc_wf(params, omp_nthreads=1, name="preproc_wf", skull_strip=SKULL_STRIP_MODES[0]):
    """Raw T1w -> preprocessed image on the reference grid (SPEC section 2).

    Inputs: ``t1w`` (path), ``template`` (template on the grid), ``coarse_template``
    (the template on the coarser registration grid). Outputs: the grid image,
    the brain mask on the grid and on the raw T1w's own voxel grid, and the forward transforms.
    ``skull_strip`` is --skull-strip-t1w (``steps.SKULL_STRIP_MODES``).
    """
    wf = pe.Workflow(name=name)
    wf.__desc__ = preproc_description(params, skull_strip)
    inputnode = pe.Node(IdentityInterface(fields=["t1w", "template", "coarse_template"]), name="inputnode")
    outputnode = pe.Node(IdentityInterface(fields=list(PREPROC_OUTPUTS)), name="outputnode")

    load = pe.Node(LoadT1w(), name="load")
    n4 = pe.Node(
        N4BiasCorrect(shrink_mm=params.n4_shrink_mm, iterations=list(params.n4_iterations), mask_fraction=params.n4_mask_fraction),
        name="n4",
        mem_gb=STEP_MEM_GB["n4"],
    )
    skullstrip = pe.Node(
        SkullStrip(
            stripped_max_volume_ml=params.stripped_max_volume_ml,
            network_size=params.skullstrip_network_size,
            num_threads=omp_nthreads,
            mode=skull_strip,
        ),
        name="skullstrip",
        n_procs=omp_nthreads,
        mem_gb=STEP_MEM_GB["skullstrip"],
    )
    register = pe.Node(
        RegisterToTemplate(
            rigid_iterations=list(params.rigid_iterations),
            affine_iterations=list(params.affine_iterations),
            syn_iterations=list(params.syn_iterations),
            seed=params.registration_seed,
        ),
        name="register",
        mem_gb=STEP_MEM_GB["register"],
    )
    resample = pe.Node(ResampleToGrid(interpolation=params.interpolation), name="resample")
    smooth = pe.Node(SmoothInMask(fwhm_mm=params.fwhm_mm), name="smooth")
    normalise = pe.Node(NormaliseIntensity(params=params.to_dict()), name="normalise")
    mask_to_source = pe.Node(OnSourceGrid(), name="mask_to_source")
    reportlets = pe.Node(PreprocReportlets(), name="reportlets")

    wf.connect([
        (inputnode, load, [("t1w", "in_file")]),
        (load, n4, [("out_file", "in_file")]),
        (n4, skullstrip, [("out_file", "in_file")]),
        (skullstrip, register, [("out_brain", "in_brain")]),
        (inputnode, register, [("coarse_template", "coarse_template"), ("template", "template")]),
        (skullstrip, resample, [("out_brain", "in_brain"), ("out_mask", "in_mask")]),
        (inputnode, resample, [("template", "template")]),
        (register, resample, [("warp", "warp"), ("affine", "affine")]),
        (resample, smooth, [("out_file", "in_file"), ("out_mask", "mask")]),
        (smooth, normalise, [("out_file", "in_file")]),
        (resample, normalise, [("out_mask", "mask")]),
        (normalise, outputnode, [("out_file", "t1w_grid"), ("intensity_map", "intensity_map")]),
        (resample, outputnode, [("out_mask", "mask_grid")]),
        (skullstrip, mask_to_source, [("out_mask", "in_file")]),
        (inputnode, mask_to_source, [("t1w", "source_file")]),
        (mask_to_source, outputnode, [("out_file", "mask_native")]),
        (skullstrip, outputnode, [("input_skull_stripped", "input_skull_stripped")]),
        (register, outputnode, [("affine", "xfm_affine"), ("warp", "xfm_warp")]),
        (n4, reportlets, [("out_file", "t1w")]),
        (skullstrip, reportlets, [("out_mask", "mask")]),
        (resample, reportlets, [("out_file", "grid_brain")]),
        (inputnode, reportlets, [("template", "template")]),
        (reportlets, outputnode, [("figure_brainmask", "figure_brainmask"), ("figure_registration", "figure_registration")]),
    ])  # fmt: skip
    return wf


def init_participant_wf(t1w_inputs, output_dir, params, template_files, name, omp_nthreads=1, skull_strip=SKULL_STRIP_MODES[0], extend=None):
    """One preprocessing workflow and one derivatives sink per T1w; ``template_files`` are the
    template on the grid and its coarse copy (``steps.write_template_files``), shared by all;
    ``name`` is ``workflow_name``'s; ``skull_strip`` is --skull-strip-t1w. ``extend(wf, t1w, (sink,
    output))``, where given, adds what follows each T1w's sink (the participant level: its scoring)."""
    wf = pe.Workflow(name=name)
    for t1w in t1w_inputs:
        preproc = init_preproc_wf(params, omp_nthreads, name=f"{t1w.ident}_wf", skull_strip=skull_strip)
        preproc.inputs.inputnode.t1w = str(t1w.path)
        preproc.inputs.inputnode.template = template_files["template"]
        preproc.inputs.inputnode.coarse_template = template_files["coarse_template"]
        sink = pe.Node(
            DerivativesSink(
                output_dir=str(output_dir),
                t1w_relpath=t1w.relpath,
                entities=t1w.entities,
                params=params.to_dict(),
            ),
            name=f"{t1w.ident}_sink",
            run_without_submitting=True,
        )
        # outputs must be rewritten if someone deleted them, even when nothing upstream changed
        sink.overwrite = True
        wf.connect([(preproc, sink, [(f"outputnode.{k}", k) for k in PREPROC_OUTPUTS])])
        if extend is not None:
            extend(wf, t1w, (sink, "out_files"))
    return wf
