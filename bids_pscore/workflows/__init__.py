"""nipype workflows above the scoring: each T1w's quality gate, scoring and figures (``scoring.init_scoring_wf``),
which the participant level adds after the T1w's preprocessing sink. The preprocessing's workflows are in
``bids_pscore.preprocess``, below the gate and the scoring that these nodes run (a node here imports
``bids_pscore.scoring``, which reads ``preprocess.steps``: one package for both would be a circle)."""

from .scoring import SCORING_NODES, ScoringSettings, init_scoring_wf

__all__ = ["SCORING_NODES", "ScoringSettings", "init_scoring_wf"]
