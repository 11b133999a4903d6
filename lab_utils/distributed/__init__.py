"""Data-parallel training with PyTorch's engines, launched from a notebook and measured per rank.

``launcher``: torchrun as a subprocess (one process per GPU, or gloo processes on a CPU). ``engines``: DDP, ZeRO-1
(``ZeroRedundancyOptimizer``), FSDP2 as ZeRO-2/3, and the bytes a rank holds under each. ``train``: the script every
rank runs (``python -m lab_utils.distributed.train``). The memory each rank should hold comes from
``lab_utils.memory.estimate_training_memory(..., world_size=, sharding=)``. Chapter "When one GPU is not enough"
(chapters/08_multi_gpu).
"""

from lab_utils.distributed.engines import (
    ENGINES,
    STAGE_OF,
    communication_bytes,
    gathered_parameter_bytes,
    held_gradient_bytes,
    held_optimizer_state_bytes,
    held_parameter_bytes,
    local_nbytes,
    wrap,
)
from lab_utils.distributed.launcher import CHILD_ENV, gpu_count, launch, plan, run_training

__all__ = ["CHILD_ENV", "ENGINES", "STAGE_OF", "communication_bytes", "gathered_parameter_bytes", "gpu_count",
           "held_gradient_bytes", "held_optimizer_state_bytes", "held_parameter_bytes", "launch", "local_nbytes",
           "plan", "run_training", "wrap"]
