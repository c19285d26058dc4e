"""logs/CITATION.md: a methods paragraph naming every tool and version, and the references."""

from pathlib import Path

from .. import bids
from ..atlas import CITATION as ATLAS_CITATION
from ..fileio import write_text

REFERENCES = (
    "Pan J, Zeng A, Yang Z. Method for extracting neuroimaging biomarker based on interpretable ensemble 3DCNN. "
    "US patent 12383189 B2, 2025.",
    ATLAS_CITATION,
    "Avants BB, Tustison NJ, Song G, et al. A reproducible evaluation of ANTs similarity metric performance in brain "
    "image registration. NeuroImage 54(3):2033-2044, 2011. doi:10.1016/j.neuroimage.2010.09.025",
    "Tustison NJ, Avants BB, Cook PA, et al. N4ITK: improved N3 bias correction. IEEE Trans Med Imaging "
    "29(6):1310-1320, 2010. doi:10.1109/TMI.2010.2046908",
    "Fisch L, Zumdick S, Barkhau C, et al. deepbet: Fast brain extraction of T1-weighted MRI using Convolutional "
    "Neural Networks. Comput Biol Med 179:108845, 2024. doi:10.1016/j.compbiomed.2024.108845",
    "Gorgolewski K, Burns CD, Madison C, et al. Nipype: a flexible, lightweight and extensible neuroimaging data "
    "processing framework in Python. Front Neuroinform 5:13, 2011. doi:10.3389/fninf.2011.00013",
    "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear average age-appropriate brain "
    "templates from birth to adulthood. NeuroImage 47:S102, 2009. doi:10.1016/S1053-8119(09)70884-5",
)


def methods_text(params, seed, metadata):
    """The paragraph, from the preprocessing workflow's own description and the model's card."""
    from ..preprocess import init_preproc_wf

    versions = bids.software_versions()
    preprocessing = init_preproc_wf(params, seed).__desc__
    demo = f" {metadata['warning']}" if metadata.get("warning") else ""
    return (
        f"P-scores were computed with bids_pscore {versions['bids_pscore']}, a BIDS-App built on Nipype "
        f"{versions['nipype']}, ANTsPy {versions['antspyx']}, deepbet {versions['deepbet']}, nilearn {versions['nilearn']}, "
        f"NiBabel {versions['nibabel']}, PyBIDS {versions['pybids']} and PyTorch {versions['torch']}. {preprocessing} "
        f"The image was cut into 150 cubes of 25 x 25 x 25 voxels, each classified by its own 3D convolutional network; "
        f"a meta-classifier combined the {len(metadata['selected_cubes'])} selected cubes with one weight per cube "
        f"(interpretable ensemble 3DCNN, US patent 12383189). Cube, voxel, region (Brainnetome atlas, 246 regions) and "
        f"whole-brain P-scores followed the patent, regions being normalised by the reference statistics of the model's "
        f"training images and marked degenerative above lambda = {metadata['reference']['lambda']:.3f}. The model was "
        f"{metadata['name']} version {metadata['version']} (weights SHA256 {metadata['weights']['sha256']}).{demo}"
    )


def write_citation(output_dir, params, seed, metadata):
    """Write logs/CITATION.md; returns its path."""
    path = Path(output_dir) / "logs" / "CITATION.md"
    references = "\n".join(f"{i}. {text}" for i, text in enumerate(REFERENCES, start=1))
    write_text(path, f"# Methods\n\n{methods_text(params, seed, metadata)}\n\n# References\n\n{references}\n")
    return path
