"""The memory bill of training: a calculator by component, and measurements to put next to it.

``calculator``: the lecture's rule (4 bytes x n_params per fp32 copy; SGD keeps no state, momentum one copy, Adam two
moments). ``activations``: a per-layer estimate of what autograd saves for backward (Korthikanti et al. 2022).
``measure``: the tensors training actually holds, and the CUDA peak. Chapter "Fine-tuning and its memory bill"
(chapters/02_finetuning); with a world size and a sharding stage (``SHARDING_STAGES``) the calculator gives one rank's
share under DDP and ZeRO (chapter "When one GPU is not enough", chapters/08_multi_gpu). Units: bytes (ints); MiB =
2**20, GiB = 2**30. Import from here: ``from lab_utils.memory import estimate_training_memory``.
"""

from lab_utils.memory.activations import ARCHITECTURES, ATTENTIONS, activation_bytes, activation_bytes_for
from lab_utils.memory.calculator import (
    GIB,
    MIB,
    OPTIMIZERS,
    SHARDED,
    SHARDING_STAGES,
    STATE_COPIES,
    MemoryEstimate,
    bytes_per_element,
    count_parameters,
    estimate_model_training_memory,
    estimate_training_memory,
    shard_numel,
    to_unit,
)
from lab_utils.memory.measure import (
    PeakMemory,
    SavedTensors,
    gradient_bytes,
    measure_training_step,
    optimizer_state_bytes,
    parameter_bytes,
    peak_memory,
    saved_tensor_bytes,
)

__all__ = ["ARCHITECTURES", "ATTENTIONS", "GIB", "MIB", "OPTIMIZERS", "SHARDED", "SHARDING_STAGES", "STATE_COPIES",
           "MemoryEstimate", "PeakMemory",
           "SavedTensors", "activation_bytes", "activation_bytes_for", "bytes_per_element", "count_parameters",
           "estimate_model_training_memory", "estimate_training_memory", "gradient_bytes", "measure_training_step",
           "optimizer_state_bytes", "parameter_bytes", "peak_memory", "saved_tensor_bytes", "shard_numel", "to_unit"]
