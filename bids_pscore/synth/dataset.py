"""The one writer of a synthetic BIDS dataset and its ground truth, whatever kind of head it holds.

A subject is a ``SubjectJob``: who it is (label, age, sex, AD or not, a stated course) and its
head, which says how the healthy anatomy is made (``prepare``: the template under a random
deformation, ``templateheads.TemplateHead``, or a real base head, ``realheads.BaseScan``) and how a
session's image is made from the session's anatomy (``scan``). The rest is the same for every
kind of head: the disease course of ``disease`` (subtype, stage, rate, region jitter), drawn
from the subject's own random stream; visits about a year apart; disease and ageing on the 1 mm
anatomy (``synth.session_anatomy``); and the files: the T1w images, participants.tsv and .json,
each subject's sessions.tsv, dataset_description.json, README and the truth in
derivatives/groundtruth (brain masks and label maps per scan, sessions.tsv, regions.tsv,
atrophy_order.tsv).
"""

import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from ..bids import BIDS_VERSION
from ..fileio import write_json, write_nifti, write_text, write_tsv
from . import GROUNDTRUTH, N_LABELS, WORK_MM, session_anatomy
from .disease import SUBTYPES, disease_losses, draw_course, subtype_order


@dataclass(frozen=True)
class SubjectJob:
    """One subject to make: who it is, its head, and what its course may not draw."""

    out_dir: str
    label: str  # the subject label; with the seed, it seeds the subject's anatomy, course and scans
    head: object  # prepare(rng) -> synth.Head and scan(head, image, labels, rng) -> (T1w, mask, labels) images
    age: float  # at the first session
    sex: str
    is_ad: bool
    n_sessions: int
    seed: int
    acquisition_seed: int | None = None  # the scans' pose, grid, bias field and noise, where the head scans anew (default: seed)
    course: dict | None = None  # subtype, stage0 and rate that replace the drawn ones (disease.draw_course)


def _subject(job):
    """Make one subject's head and write its sessions; returns its rows for the dataset's truth tables."""
    from ..atlas import region_table

    stream = zlib.crc32(job.label.encode())
    subject = np.random.default_rng([job.seed, stream])
    head = job.head.prepare(subject)
    healthy = np.bincount(head.anatomy.labels.ravel(), minlength=N_LABELS)
    subtype, stage0, rate, jitter = draw_course(subject, **(job.course or {})) if job.is_ad else ("none", None, 0.0, None)
    order = subtype_order(subtype) if job.is_ad else None
    visit = datetime(2015, 1, 1, 8, 0) + timedelta(days=int(subject.integers(0, 5 * 365)), minutes=int(subject.integers(0, 600)))
    names = region_table().set_index("index")["label"]
    acquisition_seed = job.seed if job.acquisition_seed is None else job.acquisition_seed
    sub, years, sessions, truth_sessions, truth_regions = f"sub-{job.label}", 0.0, [], [], []
    for k in range(1, job.n_sessions + 1):
        ses = f"ses-{k}"
        stage = None if stage0 is None else stage0 + rate * years
        disease = dict(zip(order["index"], disease_losses(stage, order, jitter))) if job.is_ad else {}
        image, labels, target = session_anatomy(head, job.age, job.age + years, disease)
        realised = 1.0 - np.bincount(labels.ravel(), minlength=N_LABELS) / np.maximum(healthy, 1)
        t1w, mask, dseg = job.head.scan(head, image, labels, np.random.default_rng([acquisition_seed, stream, k]))
        stem = f"{sub}_{ses}"
        write_nifti(Path(job.out_dir) / sub / ses / "anat" / f"{stem}_T1w.nii.gz", t1w)
        truth_dir = Path(job.out_dir) / GROUNDTRUTH / sub / ses / "anat"
        write_nifti(truth_dir / f"{stem}_desc-brain_mask.nii.gz", mask)
        write_nifti(truth_dir / f"{stem}_atlas-Brainnetome_dseg.nii.gz", dseg)
        sessions.append({"session_id": ses, "acq_time": visit.strftime("%Y-%m-%dT%H:%M:%S"), "age": round(job.age + years, 2)})
        truth_sessions.append({"participant_id": sub, "session_id": ses, "group": "AD" if job.is_ad else "CN", "subtype": subtype,
                               "age": round(job.age + years, 2), "years_from_first": round(years, 3), "disease_stage": stage})  # fmt: skip
        for index in range(1, N_LABELS):
            truth_regions.append({"participant_id": sub, "session_id": ses, "index": index, "label": names[index],
                                  "healthy_volume_mm3": int(healthy[index] * WORK_MM**3),
                                  "disease_loss": disease.get(index, 0.0), "target_loss": target[index],
                                  "volume_loss": realised[index]})  # fmt: skip
        gap = subject.uniform(0.8, 1.3)
        visit += timedelta(days=int(gap * 365.25))
        years += gap
    write_tsv(Path(job.out_dir) / sub / f"{sub}_sessions.tsv", pd.DataFrame(sessions), "%.6g")
    return truth_sessions, truth_regions


def write_subjects(out_dir, description, readme, jobs, n_procs=1):
    """A BIDS dataset of the ``jobs``' subjects (``SubjectJob``) with its ground truth in derivatives/groundtruth.

    ``description`` is its dataset_description.json and ``readme`` its README; ``n_procs`` subjects
    are made side by side.
    """
    out_dir = Path(out_dir)
    write_json(out_dir / "dataset_description.json", description)
    write_text(out_dir / "README", readme)
    if n_procs > 1:
        # spawn: deepbet's torch and ANTs' threads do not survive a fork
        with ProcessPoolExecutor(n_procs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_subject, jobs))
    else:
        results = [_subject(job) for job in jobs]
    participants = [{"participant_id": f"sub-{job.label}", "group": "AD" if job.is_ad else "CN", "age": job.age, "sex": job.sex}
                    for job in jobs]  # fmt: skip
    write_tsv(out_dir / "participants.tsv", pd.DataFrame(participants), "%.6g")
    origin = next((job.head.origin for job in jobs), "")  # whose the age and sex are
    write_json(out_dir / "participants.json", {
        "group": {"Description": "diagnosis", "Levels": {"AD": "simulated atrophy", "CN": "no simulated atrophy"}},
        "age": {"Description": f"age at the first session{origin}", "Units": "year"},
        "sex": {"Description": f"sex{origin}"},
    })  # fmt: skip
    truth_root = out_dir / GROUNDTRUTH
    write_json(truth_root / "dataset_description.json", {
        "Name": "ground truth of the simulated atrophy", "BIDSVersion": BIDS_VERSION, "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "bids_pscore-synth"}],
    })  # fmt: skip
    write_tsv(truth_root / "sessions.tsv", pd.DataFrame([row for rows, _ in results for row in rows]), "%.6g")
    write_tsv(truth_root / "regions.tsv", pd.DataFrame([row for _, rows in results for row in rows]), "%.6g")
    write_tsv(truth_root / "atrophy_order.tsv", pd.concat([subtype_order(s) for s in SUBTYPES], ignore_index=True), "%.6g")
    return out_dir
