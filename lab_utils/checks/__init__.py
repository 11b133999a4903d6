"""Exercise checks, one module per concept: each runs a student's function against the reference.

A check returns True and prints one "✓" line when the answer is right, raises ``AssertionError`` naming the first
mistake when it is wrong, and prints "✗ ... is not written yet" and returns False while the function is still the
``raise NotImplementedError`` stub (see ``feedback``). Notebooks import from here:
``from lab_utils.checks import check_causal_mask``.
"""

from lab_utils.checks.adapters import check_adapter_params
from lab_utils.checks.attention import check_attention
from lab_utils.checks.classification import check_wilson_interval
from lab_utils.checks.decoding import check_memory_roofline
from lab_utils.checks.distributed import check_rank_memory, check_scale_to_gpus
from lab_utils.checks.formats import check_float_value
from lab_utils.checks.freezing import check_last_layers_params
from lab_utils.checks.gptq import check_quantize_column
from lab_utils.checks.heads import check_head_params
from lab_utils.checks.kv_cache import check_cache_bytes
from lab_utils.checks.lab import check_adapter_module, check_lora_module, check_trainable
from lab_utils.checks.linear_attention import check_recurrent_step
from lab_utils.checks.lora import check_linear_to_lora, check_lora_budget, check_lora_forward, check_lora_merge
from lab_utils.checks.masks import check_causal_mask
from lab_utils.checks.memory import check_max_batch, check_model_mib, check_training_mib
from lab_utils.checks.models import check_block_params
from lab_utils.checks.objectives import check_mean_nll, check_mlm_masking
from lab_utils.checks.prompting import check_extract_answer, check_label_probs
from lab_utils.checks.prompts import check_prepend_prompt
from lab_utils.checks.qlora import check_qlora_bytes
from lab_utils.checks.quant import check_absmax_int8, check_bits_per_param, check_block_size, check_zeropoint
from lab_utils.checks.selection import check_choose_method
from lab_utils.checks.sparse import check_receptive_field, check_sliding_window_mask

__all__ = [
    "check_absmax_int8",
    "check_adapter_module",
    "check_adapter_params",
    "check_attention",
    "check_bits_per_param",
    "check_block_params",
    "check_block_size",
    "check_cache_bytes",
    "check_causal_mask",
    "check_choose_method",
    "check_extract_answer",
    "check_float_value",
    "check_head_params",
    "check_label_probs",
    "check_last_layers_params",
    "check_linear_to_lora",
    "check_lora_budget",
    "check_lora_forward",
    "check_lora_merge",
    "check_lora_module",
    "check_max_batch",
    "check_mean_nll",
    "check_memory_roofline",
    "check_mlm_masking",
    "check_model_mib",
    "check_prepend_prompt",
    "check_qlora_bytes",
    "check_quantize_column",
    "check_rank_memory",
    "check_receptive_field",
    "check_recurrent_step",
    "check_scale_to_gpus",
    "check_sliding_window_mask",
    "check_trainable",
    "check_training_mib",
    "check_wilson_interval",
    "check_zeropoint",
]
