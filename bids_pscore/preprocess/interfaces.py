"""Small nipype interfaces, one per preprocessing step, over the functions in ``steps``."""

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from ..config import SKULL_STRIP_MODES
from ..model.preprocessing import PreprocParams
from .steps import (
    apply_to_grid,
    as_image,
    brain_mask,
    load_t1w,
    n4_correct,
    on_source_grid,
    register,
    smooth_in_mask,
    standardise,
    voxel_sizes,
)


def _save(img, runtime, name):
    out = os.path.join(runtime.cwd, name)
    img.to_filename(out)
    return out


def _load(path):
    img = nib.load(path)
    return img, np.asarray(img.dataobj, dtype=np.float32)


class _InFileSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)


class _OutFileSpec(TraitedSpec):
    out_file = File(exists=True)


class LoadT1w(SimpleInterface):
    """Read and check one T1w, reorient to RAS+ (SPEC 2.1)."""

    input_spec = _InFileSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        self._results["out_file"] = _save(load_t1w(self.inputs.in_file), runtime, "t1w_ras.nii")
        return runtime


class _N4InputSpec(_InFileSpec):
    shrink_mm = traits.Float(mandatory=True)
    iterations = traits.List(traits.Int, mandatory=True)
    mask_fraction = traits.Float(mandatory=True)


class N4BiasCorrect(SimpleInterface):
    """N4 bias-field correction (SPEC 2.2)."""

    input_spec = _N4InputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.in_file)
        out = n4_correct(img, self.inputs.shrink_mm, self.inputs.iterations, self.inputs.mask_fraction)
        self._results["out_file"] = _save(out, runtime, "t1w_n4.nii")
        return runtime


class _SkullStripInputSpec(_InFileSpec):
    stripped_max_volume_ml = traits.Float(mandatory=True)
    network_size = traits.Int(mandatory=True, desc="deepbet's input size (voxels a side)")
    mode = traits.Enum(*SKULL_STRIP_MODES, usedefault=True, desc="--skull-strip-t1w")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _SkullStripOutputSpec(TraitedSpec):
    out_brain = File(exists=True)
    out_mask = File(exists=True)
    input_skull_stripped = traits.Bool()


class SkullStrip(SimpleInterface):
    """Brain mask in subject space and the masked brain (SPEC 2.3)."""

    input_spec = _SkullStripInputSpec
    output_spec = _SkullStripOutputSpec

    def _run_interface(self, runtime):
        img, data = _load(self.inputs.in_file)
        mask, stripped = brain_mask(img, self.inputs.stripped_max_volume_ml, self.inputs.network_size, self.inputs.num_threads, self.inputs.mode)
        inside = np.asarray(mask.dataobj) > 0
        mask_img = as_image(inside, img.affine, np.uint8)
        self._results["out_mask"] = _save(mask_img, runtime, "brain_mask.nii.gz")
        brain = as_image(np.where(inside, data, 0), img.affine)
        self._results["out_brain"] = _save(brain, runtime, "brain.nii")
        self._results["input_skull_stripped"] = stripped
        return runtime


class _OnSourceGridInputSpec(_InFileSpec):
    source_file = File(exists=True, mandatory=True, desc="the raw T1w the RAS+ image came from")


class OnSourceGrid(SimpleInterface):
    """A mask on the raw T1w's own voxel grid, for users who apply it to the raw image."""

    input_spec = _OnSourceGridInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        img = on_source_grid(nib.load(self.inputs.in_file), self.inputs.source_file)
        self._results["out_file"] = _save(img, runtime, "brain_mask_source_grid.nii.gz")
        return runtime


class _ReportletsInputSpec(BaseInterfaceInputSpec):
    t1w = File(exists=True, mandatory=True, desc="bias-corrected T1w with its skull, RAS+")
    mask = File(exists=True, mandatory=True, desc="brain mask on the T1w's voxels")
    grid_brain = File(exists=True, mandatory=True, desc="the brain on the grid, before smoothing")
    template = File(exists=True, mandatory=True, desc="the template on the grid")


class _ReportletsOutputSpec(TraitedSpec):
    figure_brainmask = File(exists=True)
    figure_registration = File(exists=True)


# voxel size the native-space figure is drawn at: isotropic, whatever the scan's voxels
REPORT_DISPLAY_MM = 1.5
# the template's grey/white boundary on its intensity scale, drawn over the subject
TEMPLATE_WM_LEVEL = 0.72


class PreprocReportlets(SimpleInterface):
    """The report's two preprocessing checks, drawn while their images are at hand, as fMRIPrep's
    reportlets: the brain mask over the bias-corrected head in its own space (a mask that cuts
    brain or keeps skull shows), and the template's edge over the unsmoothed brain on the grid."""

    input_spec = _ReportletsInputSpec
    output_spec = _ReportletsOutputSpec

    def _run_interface(self, runtime):
        from nibabel.processing import resample_from_to, resample_to_output

        from .. import viz

        head = resample_to_output(nib.load(self.inputs.t1w), voxel_sizes=REPORT_DISPLAY_MM, order=1)
        mask = np.asarray(resample_from_to(nib.load(self.inputs.mask), head, order=0).dataobj) > 0
        out = os.path.join(runtime.cwd, "brainmask.png")
        viz.mosaic(out, np.asarray(head.dataobj, np.float32), contour=mask, cuts=viz.cuts_through(mask), left_first=True,
                       title="bias-corrected T1w in its own space, brain mask in red")  # fmt: skip
        self._results["figure_brainmask"] = out
        out = os.path.join(runtime.cwd, "registration.png")
        _, brain = _load(self.inputs.grid_brain)
        _, template = _load(self.inputs.template)
        viz.mosaic(out, brain, outline=(template, TEMPLATE_WM_LEVEL), title="registration: template white-matter edge in cyan")
        self._results["figure_registration"] = out
        return runtime


class _RegisterInputSpec(BaseInterfaceInputSpec):
    in_brain = File(exists=True, mandatory=True)
    coarse_template = File(exists=True, mandatory=True, desc="template for the linear stages")
    template = File(exists=True, mandatory=True, desc="template on the grid, for SyN")
    rigid_iterations = traits.List(traits.Int, mandatory=True)
    affine_iterations = traits.List(traits.Int, mandatory=True)
    syn_iterations = traits.List(traits.Int, mandatory=True)
    seed = traits.Int(mandatory=True)


class _RegisterOutputSpec(TraitedSpec):
    warp = File(exists=True)
    affine = File(exists=True)


class RegisterToTemplate(SimpleInterface):
    """Rigid + affine + SyN registration to the template (SPEC 2.4)."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        warp, affine = register(
            nib.load(self.inputs.in_brain),
            nib.load(self.inputs.coarse_template),
            nib.load(self.inputs.template),
            (self.inputs.rigid_iterations, self.inputs.affine_iterations, self.inputs.syn_iterations),
            self.inputs.seed,
            Path(runtime.cwd) / "to_template_",
        )
        # ANTs writes into a temporary folder of its own: keep the files in the node's folder
        for key, src, name in (("warp", warp, "warp.nii.gz"), ("affine", affine, "affine.mat")):
            dst = os.path.join(runtime.cwd, name)
            if os.path.abspath(src) != dst:
                shutil.copyfile(src, dst)
            self._results[key] = dst
        return runtime


class _ResampleInputSpec(BaseInterfaceInputSpec):
    in_brain = File(exists=True, mandatory=True)
    in_mask = File(exists=True, mandatory=True)
    template = File(exists=True, mandatory=True)
    warp = File(exists=True, mandatory=True)
    affine = File(exists=True, mandatory=True)
    interpolation = traits.Str(mandatory=True)


class _ResampleOutputSpec(TraitedSpec):
    out_file = File(exists=True)
    out_mask = File(exists=True)


class ResampleToGrid(SimpleInterface):
    """Brain and mask onto the reference grid (SPEC 2.5)."""

    input_spec = _ResampleInputSpec
    output_spec = _ResampleOutputSpec

    def _run_interface(self, runtime):
        template = nib.load(self.inputs.template)
        transforms = [self.inputs.warp, self.inputs.affine]
        brain = apply_to_grid(nib.load(self.inputs.in_brain), template, transforms, self.inputs.interpolation)
        # a linearly interpolated mask cut at one half keeps the edge where it was
        mask = apply_to_grid(nib.load(self.inputs.in_mask), template, transforms, "linear")
        inside = np.asarray(mask.dataobj) >= 0.5
        brain = as_image(np.where(inside, np.clip(brain.dataobj, 0, None), 0), brain.affine)
        self._results["out_file"] = _save(brain, runtime, "brain_grid.nii")
        self._results["out_mask"] = _save(as_image(inside, mask.affine, np.uint8), runtime, "mask_grid.nii.gz")
        return runtime


class _MaskedInputSpec(_InFileSpec):
    mask = File(exists=True, mandatory=True)


class _SmoothInputSpec(_MaskedInputSpec):
    fwhm_mm = traits.Float(mandatory=True)


class SmoothInMask(SimpleInterface):
    """Gaussian smoothing inside the brain mask (SPEC 2.6)."""

    input_spec = _SmoothInputSpec
    output_spec = _OutFileSpec

    def _run_interface(self, runtime):
        img, data = _load(self.inputs.in_file)
        mask = np.asarray(nib.load(self.inputs.mask).dataobj) > 0
        out = smooth_in_mask(data, mask, self.inputs.fwhm_mm, float(voxel_sizes(img)[0]))
        self._results["out_file"] = _save(as_image(out, img.affine), runtime, "smoothed_grid.nii")
        return runtime


class _NormaliseInputSpec(_MaskedInputSpec):
    params = traits.Dict(mandatory=True, desc="PreprocParams.to_dict(): the standardisation and its parameters")


class _NormaliseOutputSpec(_OutFileSpec):
    intensity_map = traits.Tuple(traits.Float, traits.Float, desc="(subtracted, divided_by): steps.standardise's map")


class NormaliseIntensity(SimpleInterface):
    """Put the smoothed brain on [0, 1]: by a robust maximum, or by its grey and white matter (SPEC 2.7)."""

    input_spec = _NormaliseInputSpec
    output_spec = _NormaliseOutputSpec

    def _run_interface(self, runtime):
        img, data = _load(self.inputs.in_file)
        mask = np.asarray(nib.load(self.inputs.mask).dataobj) > 0
        out, intensity_map = standardise(data, mask, PreprocParams.from_dict(self.inputs.params))
        self._results["out_file"] = _save(as_image(out, img.affine), runtime, "preproc_grid.nii.gz")
        self._results["intensity_map"] = intensity_map
        return runtime


GRID_IMAGES = ("t1w_grid", "mask_grid")


class _SinkInputSpec(BaseInterfaceInputSpec):
    output_dir = traits.Str(mandatory=True)
    t1w_relpath = traits.Str(mandatory=True)
    entities = traits.Dict(mandatory=True)
    params = traits.Dict(mandatory=True)
    input_skull_stripped = traits.Bool(mandatory=True)
    intensity_map = traits.Tuple(traits.Float, traits.Float, mandatory=True)
    t1w_grid = File(exists=True, mandatory=True)
    mask_grid = File(exists=True, mandatory=True)
    mask_native = File(exists=True, mandatory=True)
    xfm_affine = File(exists=True, mandatory=True)
    xfm_warp = File(exists=True, mandatory=True)
    figure_brainmask = File(exists=True, mandatory=True)
    figure_registration = File(exists=True, mandatory=True)


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True))


class DerivativesSink(SimpleInterface):
    """Copy one T1w's results into the BIDS derivatives folder, each file atomically."""

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec

    def _run_interface(self, runtime):
        from ..derivatives import layout
        from ..derivatives.sidecars import preproc_sidecars
        from ..fileio import copy_file, write_json, write_nifti

        params = self.inputs.params
        paths = layout.session_outputs(self.inputs.entities, params["template"], layout.PREPROCESSING)
        sidecars = preproc_sidecars(self.inputs.t1w_relpath, paths, params, self.inputs.input_skull_stripped, self.inputs.intensity_map)
        root = Path(self.inputs.output_dir)
        written = []
        for key, relpath in layout.session_outputs(self.inputs.entities, params["template"], layout.PREPROCESSING, layout.CHECKS).items():
            if key in GRID_IMAGES:
                # the grid is the template's space: qform and sform say so (code 4), as in niworkflows
                img = nib.load(getattr(self.inputs, key))
                img.set_qform(img.affine, 4)
                img.set_sform(img.affine, 4)
                write_nifti(root / relpath, img)
            else:
                copy_file(getattr(self.inputs, key), root / relpath)
            written.append(str(root / relpath))
            if layout.SESSION_OUTPUTS[key].sidecar:
                write_json(root / layout.sidecar_path(relpath), sidecars[key])
                written.append(str(root / layout.sidecar_path(relpath)))
        self._results["out_files"] = written
        return runtime
