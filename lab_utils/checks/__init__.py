"""Exercise checks, one module per concept: each runs a student's function against the reference.

A check raises ``AssertionError`` naming the mistake on the first problem, and prints one "✓" line on success
(see ``feedback``). Notebooks import from here: ``from lab_utils.checks import check_causal_mask``.
"""

from lab_utils.checks.masks import check_causal_mask
from lab_utils.checks.memory import check_model_mib
from lab_utils.checks.objectives import check_mlm_masking, check_perplexity

__all__ = ["check_causal_mask", "check_mlm_masking", "check_model_mib", "check_perplexity"]
