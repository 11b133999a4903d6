"""lab_utils: the companion package of "LLMs: Fine-tuning & Optimisation".

Every notebook imports it; nothing in a chapter folder copies it. Modules by chapter:

- every notebook: ``profile`` (CPU/GPU profile, seeding, dtype, GPU memory cap, hardware report),
  ``assets`` (MiniLM, SmolLM2), ``tweets`` (the cleaned, split tweets), ``checks`` (exercise checks),
  ``widgets`` (the only module that imports ipywidgets and matplotlib);
- 00 First look: the above;
- 01 Encoders and decoders: ``masks`` -> ``attention`` -> ``models``, ``objectives`` (MLM, next token, training);
- maintainers: ``execute`` and ``provenance`` (executing notebooks and stamping them), ``book`` (Sphinx banner).

Imports flow one way: ``masks -> attention -> models``; ``assets -> tweets``; no module imports ``widgets``.
"""

from lab_utils.profile import pick, setup

__all__ = ["pick", "setup"]
__version__ = "0.1.0"
