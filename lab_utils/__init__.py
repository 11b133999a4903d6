"""lab_utils: the companion package of "LLMs: Fine-tuning & Optimisation".

Every notebook imports it; nothing in a chapter folder copies it. Grouped by audience, then by concept.

What students read and call, by chapter:

- every notebook: ``profile`` (CPU/GPU profile, seeding, dtype, GPU memory cap, hardware report), ``assets``
  (the real models, MiniLM and SmolLM2, and the tweets' CSV), ``tweets`` (cleaned, de-duplicated, leak-free
  splits), ``glue`` (numbers the prose quotes), ``checks`` (exercise checks, one module per concept) and
  ``widgets`` (plots and widgets, one module per concept; the only code that imports ipywidgets or matplotlib);
- 00 First look: the above; ``checks.memory``, ``widgets.tokenizers``;
- 01 Encoders and decoders: ``masks`` -> ``attention`` -> ``models`` (the tiny from-scratch transformers),
  ``objectives`` (MLM, next token, their losses), ``training`` (the model-agnostic training loop),
  ``generation`` (greedy/sampled generation, NLL scoring); ``checks.masks``, ``checks.attention``,
  ``checks.objectives``; ``widgets.attention``, ``widgets.training``, ``widgets.diagrams``, ``widgets.embeddings``;
- 02 Fine-tuning and its memory bill: ``tweet_tasks`` (token- and span-level tasks made from the tweets),
  ``classification`` (metrics, confidence intervals, baselines), ``memory`` (the training-memory calculator and its
  measurements), ``model_sizes`` (parameter counts of published models from their configurations);
  ``objectives.model_loss`` with ``training``; ``checks.heads``, ``checks.classification``, ``checks.memory``;
  ``widgets.classification``, ``widgets.memory``;
- 03 Parameter-efficient fine-tuning: ``adaptation`` (the chapter's bench: one task, one training loop, clocks, the
  one test report), ``freezing`` (train the last layers only), ``adapters`` (bottleneck adapters), ``lora``
  (LoRA layers, injection, merging), ``prompt_tuning`` (virtual tokens); ``checks.lora``, ``checks.adapters``,
  ``checks.freezing``, ``checks.prompts``; ``widgets.peft``;
- 04 Quantization: ``formats`` (fp32/fp16/bf16 bit by bit), ``quant`` (absmax, zero-point, NF4, 4-bit packing,
  double quantization, bitsandbytes-style), ``weight_quant`` (a model's linear weights quantized and stored
  de-quantized: what the rounding alone costs), ``gptq`` (GPTQ for one linear layer, against round-to-nearest),
  ``qlora`` (MiniLM with a 4-bit bitsandbytes base and PEFT's LoRA; also the comparison's QLoRA row),
  ``training``'s ``autocast_dtype`` and ``grad_scaler`` (mixed precision); ``checks.formats``, ``checks.quant``,
  ``checks.gptq``, ``checks.qlora``; ``widgets.formats``.
  Chapter 3's comparison also uses ``checks.selection`` (choosing a method on validation);
- 05 Efficient attention: ``kv_cache`` (the tiny decoder's KV cache and its size; ``attention`` and ``models`` take it,
  and grouped KV heads, as arguments), ``decoding`` (timed greedy decoding, bandwidth and matmul rate, the roofline,
  ``StaticGreedyDecoder``: a static cache whose step is one CUDA graph), ``gqa`` (a transformers Llama's cache size,
  mean-pooling its KV heads), ``masks``' sliding, dilated, global, random-block and sink masks with ``receptive_field``
  and ``sparse_attention`` (banded attention, windowed perplexity), ``linear_attention`` (parallel, causal and recurrent
  forms); ``checks.decoding``, ``checks.kv_cache``, ``checks.sparse``, ``checks.linear_attention``;
  ``widgets.receptive_field``;
- 06 Adapting without training: ``prompting`` (few-shot prompts, drawing shots, label-word scoring with a shared-prefix
  KV cache; after ``generation``), ``word_problems`` (arithmetic word problems and reading answers; standard library
  only); ``checks.prompting``;
- 07 The LoRA lab: ``lab`` (the bench's batches as ``Trainer`` examples, Trainer's evaluation table) with ``lora``,
  ``adapters`` and ``adaptation``; ``checks.lab``;
- 08 When one GPU is not enough: ``memory``'s world size and sharding stage, ``distributed`` (``launcher``: torchrun
  from a notebook; ``engines``: DDP, ZeRO-1, FSDP stages 2 and 3, and the bytes each rank holds; ``train``: the
  script every rank runs); ``checks.distributed``.

What maintainers run: ``maintainers`` (``execute`` and ``provenance``: executing notebooks and stamping them;
``book``: the Sphinx extension; ``student``: student editions). Notebooks never import it.

Imports flow one way: ``masks -> kv_cache -> attention -> models -> objectives -> training, generation ->
decoding``; ``masks -> receptive_field, sparse_attention``; ``kv_cache -> gqa``; ``linear_attention`` needs only
torch; ``assets ->
tweets -> tweet_tasks``; ``training -> memory`` (a subpackage: ``calculator``, ``activations``,
``measure``) ``-> model_sizes``; ``classification`` needs only torch and NumPy; ``training``, ``memory``,
``classification``, ``tweets`` ``-> adaptation``; ``freezing -> adapters, lora, prompt_tuning`` (torch only, and
the model they are given); ``formats`` and ``quant -> gptq, weight_quant`` need only torch; ``assets``,
``tweets`` ``-> qlora`` (with transformers, PEFT and bitsandbytes); ``checks`` and ``widgets`` import the concept
modules; nothing imports ``widgets`` or ``maintainers``.
"""

from lab_utils.profile import pick, setup

__all__ = ["pick", "setup"]
__version__ = "0.1.0"
