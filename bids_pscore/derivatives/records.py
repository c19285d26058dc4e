"""One T1w's results as its summary JSON says them (``Summary``, the only place the file's keys are
spelt) and the words beside them: the comparison with the normative reference and the class domain."""

import json
from dataclasses import dataclass
from pathlib import Path

from .. import atlas as bn_atlas
from ..fileio import write_json


@dataclass(frozen=True)
class Summary:
    """One spread's whole-brain results as its summary JSON says them: ``*_desc-summary_pscore.json``
    (bids_pscore/summary.schema.json) and the relevance-weighted ``*_desc-relevancesummary_pscore.json``,
    which has no class. The one place the files' keys are spelt: the participant level writes them
    through it, and --reports-only, a rerun's reuse and the group level read them back through it."""

    whole: float  # whole-brain P-score
    lambda_: float
    degenerative: list  # labels of the regions above lambda
    normalisation: str
    space: str
    model: dict  # model_record
    sources: list
    ad_probability: float | None = None  # the class, the probability's summary only
    predicted_class: str | None = None
    class_reliable: bool | None = None  # None: the model has no class domain (not checked)
    class_domain: dict | None = None  # class_domain_summary's "ClassDomain"
    normative: dict | None = None  # normative_summary, with a normative reference
    description: str | None = None  # the relevance summary's, with its voxel map's
    voxel_map: str | None = None

    @property
    def model_checksum(self):
        """model.json's metadata_sha256 (None if the summary has none): the model that scored the session."""
        return self.model.get("MetadataSHA256")

    @staticmethod
    def class_fields(class_summary):
        """The Summary's class fields from ``class_domain_summary``."""
        return {"class_reliable": class_summary["ClassReliable"], "class_domain": class_summary["ClassDomain"]}

    def to_json(self):
        """The file's content, keys in the order the file has them."""
        return {
            **({"Description": self.description, "VoxelMap": self.voxel_map} if self.description is not None else {}),
            "WholeBrainPScore": self.whole,
            "WholeBrainPScoreRange": [0, bn_atlas.N_REGIONS],
            **({"ADProbability": self.ad_probability, "PredictedClass": self.predicted_class, "ClassReliable": self.class_reliable,
                "ClassDomain": self.class_domain} if self.ad_probability is not None else {}),
            **({"NumberOfAtrophicRegions": self.normative["NumberOfAtrophicRegions"], "AtrophicRegions": self.normative["AtrophicRegions"],
                "Normative": self.normative} if self.normative else {}),
            "Lambda": self.lambda_,
            "NumberOfDegenerativeRegions": len(self.degenerative),
            "DegenerativeRegions": self.degenerative,
            "Normalisation": self.normalisation,
            "Atlas": bn_atlas.ATLAS_NAME,
            "Space": self.space,
            "Model": self.model,
            "Sources": self.sources,
        }  # fmt: skip

    def write(self, path):
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, path, relevance=False):
        """A summary file read back (``relevance``: the relevance-weighted one); KeyError if it lacks a key such a
        file always has, ValueError if it is not JSON. Summaries written before the class domain have no class
        reliability: None, as for a model without a domain."""
        data = json.loads(Path(path).read_text())
        spread = (data["WholeBrainPScore"], data["Lambda"], data["DegenerativeRegions"], data["Normalisation"], data["Space"], data["Model"],
                  data["Sources"])  # fmt: skip
        if relevance:
            return cls(*spread, description=data["Description"], voxel_map=data["VoxelMap"])
        return cls(*spread, data["ADProbability"], data["PredictedClass"], data.get("ClassReliable"), data.get("ClassDomain"), data.get("Normative"))


def normative_summary(deviation, record, labels, age, sex):
    """What the session's summary says of its comparison with the model's normative reference
    (``record``: model.json's "normative")."""
    import math

    flagged = labels[deviation.atrophic].tolist()
    known_age = age is not None and not (isinstance(age, float) and math.isnan(age))
    calibration = record.get("calibration", {})
    summary = {
        "NumberOfAtrophicRegions": len(flagged),
        "AtrophicRegions": flagged,
        "Rule": record.get("rule"),
        "Threshold": record["threshold"],
        "FalseFlagsPerHealthyImage": calibration.get("false_flags_per_healthy_image"),
        "Reference": record.get("reference"),
        "SHA256": record.get("sha256"),  # of normative.safetensors: which reference, as Model.SHA256 says which weights
        "Age": float(age) if known_age else None,
        "Sex": sex if sex not in (None, "", "n/a") else None,
        "AgeAdjusted": deviation.age_adjusted and record["covariates"]["age"],
        "MedianRegionZ": deviation.overall_level,  # the flags' z are relative to it
        "Distance": deviation.distance,
        "DistanceThreshold": record["distance_threshold"],
        "Reliable": deviation.reliable,
        # the AD probability's decision moved by the reference's controls (bids_pscore-normative --calibrate-class)
        **({"ClassCalibration": record["class_calibration"]} if "class_calibration" in record else {}),
    }
    cautions = []
    if not deviation.reliable:
        cautions.append(
            f"this scan is far from the model's normative reference (median |z| {deviation.distance:.2f} > {record['distance_threshold']:.2f}, "
            "the most its healthy images reach), e.g. another scanner or protocol: its atrophic flags are not reliable; build a reference "
            "from healthy scans of your own site with bids_pscore-normative"
        )
    ages = (record.get("reference") or {}).get("age") or {}
    if record["covariates"]["age"] and not known_age:
        cautions.append(
            f"the age of this session is unknown (participants.tsv or sessions.tsv 'age'): compared with healthy people of the "
            f"reference's median age ({record['covariates'].get('age_centre', float('nan')):g}), so its flags are less certain"
        )
    elif record["covariates"]["age"] and "min" in ages and not ages["min"] <= age <= ages["max"]:
        cautions.append(f"age {age:g} is outside the normative reference's ages ({ages['min']:g}-{ages['max']:g}): its expected values "
                        "are extrapolated")  # fmt: skip
    if cautions:
        summary["Caution"] = "; ".join(cautions)
    return summary


def class_domain_summary(deviation, record):
    """What the summary says beside the AD probability of whether the class can be given for this scan:
    its ``deviation`` from the class domain (the heads the class was set on; ``record``: model.json's
    "class_domain"). Both None for a bundle without a domain: the class was not checked."""
    if record is None:
        return {"ClassReliable": None, "ClassDomain": None}
    domain = {"Distance": deviation.distance, "DistanceThreshold": record["distance_threshold"], "Reference": record["reference"],
              "FromClassCalibration": record["from_class_calibration"], "SHA256": record["sha256"]}  # fmt: skip
    if not deviation.reliable:
        domain["Caution"] = (
            f"the class is not reliable: this scan is far from the heads the model's class was set on (median |z| {deviation.distance:.2f} > "
            f"{record['distance_threshold']:.2f}, the most they reach), e.g. another scanner, where a model may call every healthy head AD; "
            "calibrate the class on healthy scans of this scanner (bids_pscore-normative --calibrate-class) or use a model trained on it"
        )
    return {"ClassReliable": deviation.reliable, "ClassDomain": domain}


def class_mark(class_domain):
    """The words beside the AD probability of a scan whose class is not reliable (the console and the
    report); "" otherwise (``class_domain``: the summary's "ClassDomain")."""
    if not class_domain or "Caution" not in class_domain:
        return ""
    heads = "the site's heads the class was calibrated on" if class_domain["FromClassCalibration"] else "the model's training scanner"
    return f"class not reliable: scan unlike {heads}"
