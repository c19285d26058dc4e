"""logs/CITATION.md (a methods paragraph naming every tool and version, and the references) and
logs/CITATION.bib (the same references in BibTeX)."""

from pathlib import Path

from .derivatives import sidecars
from .derivatives.layout import CITATION_BIB, CITATION_MD
from .fileio import write_text

# every paper the README and the methods paragraph cite: (BibTeX key, type, fields)
REFERENCES = (
    ("pan2025patent", "misc", {
        "author": "Pan, Dan and Zeng, An and Yang, Baoyao",
        "title": "Method for extracting neuroimaging biomarker based on interpretable ensemble {3DCNN}",
        "howpublished": "US patent 12383189 B2", "year": "2025"}),
    ("pan2020ensemble", "article", {
        "author": "Pan, Dan and Zeng, An and Jia, Longfei and Huang, Yin and Frizzell, Tory and Song, Xiaowei",
        "title": "Early Detection of {Alzheimer's} Disease Using Magnetic Resonance Imaging: A Novel Approach Combining "
                 "Convolutional Neural Networks and Ensemble Learning",
        "journal": "Frontiers in Neuroscience", "volume": "14", "pages": "259", "year": "2020", "doi": "10.3389/fnins.2020.00259"}),
    ("fan2016brainnetome", "article", {
        "author": "Fan, Lingzhong and Li, Hai and Zhuo, Junjie and others",
        "title": "The Human Brainnetome Atlas: A New Brain Atlas Based on Connectional Architecture",
        "journal": "Cerebral Cortex", "volume": "26", "number": "8", "pages": "3508--3526", "year": "2016",
        "doi": "10.1093/cercor/bhw157"}),
    ("avants2011ants", "article", {
        "author": "Avants, Brian B. and Tustison, Nicholas J. and Song, Gang and others",
        "title": "A reproducible evaluation of {ANTs} similarity metric performance in brain image registration",
        "journal": "NeuroImage", "volume": "54", "number": "3", "pages": "2033--2044", "year": "2011",
        "doi": "10.1016/j.neuroimage.2010.09.025"}),
    ("tustison2010n4", "article", {
        "author": "Tustison, Nicholas J. and Avants, Brian B. and Cook, Philip A. and others",
        "title": "{N4ITK}: improved {N3} bias correction",
        "journal": "IEEE Transactions on Medical Imaging", "volume": "29", "number": "6", "pages": "1310--1320", "year": "2010",
        "doi": "10.1109/TMI.2010.2046908"}),
    ("fisch2024deepbet", "article", {
        "author": "Fisch, Lukas and Zumdick, Stefan and Barkhau, Carlotta and others",
        "title": "deepbet: Fast brain extraction of {T1}-weighted {MRI} using Convolutional Neural Networks",
        "journal": "Computers in Biology and Medicine", "volume": "179", "pages": "108845", "year": "2024",
        "doi": "10.1016/j.compbiomed.2024.108845"}),
    ("gorgolewski2011nipype", "article", {
        "author": "Gorgolewski, Krzysztof and Burns, Christopher D. and Madison, Cindee and others",
        "title": "Nipype: a flexible, lightweight and extensible neuroimaging data processing framework in {Python}",
        "journal": "Frontiers in Neuroinformatics", "volume": "5", "pages": "13", "year": "2011", "doi": "10.3389/fninf.2011.00013"}),
    ("fonov2009mni", "article", {
        "author": "Fonov, Vladimir S. and Evans, Alan C. and McKinstry, Robert C. and Almli, C. Robert and Collins, D. Louis",
        "title": "Unbiased nonlinear average age-appropriate brain templates from birth to adulthood",
        "journal": "NeuroImage", "volume": "47", "pages": "S102", "year": "2009", "doi": "10.1016/S1053-8119(09)70884-5"}),
)  # fmt: skip


def reference_text(fields):
    """One reference as a line of text, e.g. 'Pan D, Zeng A, ... Front Neurosci 14:259, 2020. doi:...'."""
    names = [n.strip() for n in fields["author"].split(" and ")]
    authors = ", ".join("et al." if n == "others" else f"{n.split(',')[0]} {''.join(p[0] for p in n.split(',')[1].split())}" for n in names)
    title = fields["title"].replace("{", "").replace("}", "")
    where = fields.get("howpublished") or f"{fields['journal']} {fields.get('volume', '')}" + (
        f"({fields['number']})" if "number" in fields else ""
    ) + (f":{fields['pages'].replace('--', '-')}" if "pages" in fields else "")
    doi = f" doi:{fields['doi']}" if "doi" in fields else ""
    return f"{authors.removesuffix('.')}. {title}. {where}, {fields['year']}.{doi}"


def bibtex():
    """The references as BibTeX entries."""
    entries = []
    for key, kind, fields in REFERENCES:
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields.items())
        entries.append(f"@{kind}{{{key},\n{body}\n}}")
    return "\n\n".join(entries) + "\n"


def methods_text(params, metadata, skull_strip):
    """The paragraph, from the preprocessing workflow's own description (``skull_strip``: the run's
    --skull-strip-t1w) and the model's card."""
    from .preprocess.workflow import preproc_description

    versions = sidecars.software_versions()
    preprocessing = preproc_description(params, skull_strip)
    demo = f" {metadata['warning']}" if metadata.get("warning") else ""
    return (
        f"P-scores were computed with bids_pscore {versions['bids_pscore']}, a BIDS-App built on Nipype "
        f"{versions['nipype']}, ANTsPy {versions['antspyx']}, deepbet {versions['deepbet']}, nilearn {versions['nilearn']}, "
        f"NiBabel {versions['nibabel']}, PyBIDS {versions['pybids']} and PyTorch {versions['torch']}. {preprocessing} "
        f"The image was cut into 150 cubes of 25 x 25 x 25 voxels, each classified by its own 3D convolutional network; "
        f"a meta-classifier combined the {len(metadata['selected_cubes'])} selected cubes with one weight per cube "
        f"(interpretable ensemble 3DCNN, US patent 12383189; Pan et al. 2020). Cube, voxel, region (Brainnetome atlas, "
        f"246 regions) and whole-brain P-scores followed the patent, regions being normalised by the reference statistics "
        f"of the model's reference images and marked degenerative above lambda = {metadata['reference']['lambda']:.3f}. "
        f"The model was {metadata['name']} version {metadata['version']} (weights SHA256 {metadata['weights']['sha256']}).{demo}"
    )


def write_citation(output_dir, params, metadata, skull_strip):
    """Write logs/CITATION.md and logs/CITATION.bib; returns the first's path."""
    path = Path(output_dir) / CITATION_MD
    references = "\n".join(f"{i}. {reference_text(fields)}" for i, (_, _, fields) in enumerate(REFERENCES, start=1))
    write_text(path, f"# Methods\n\n{methods_text(params, metadata, skull_strip)}\n\n# References\n\n{references}\n\n"
                     f"The same references in BibTeX: `{Path(CITATION_BIB).name}`.\n")  # fmt: skip
    write_text(Path(output_dir) / CITATION_BIB, bibtex())
    return path
