"""A tiny pre-LN transformer that is an encoder or a decoder by its mask alone, and a tiny encoder-decoder.

Chapter "Encoders and decoders" (chapters/01_transformers). Architecture of Vaswani et al. 2017 with the
pre-LayerNorm placement of GPT-2 (Radford et al. 2019; Xiong et al. 2020), learned positions, and an output
head tied to the token embedding (Press & Wolf 2017). Shapes: ids `(B, T)`, hidden `(B, T, d_model)`,
logits `(B, T, vocab_size)`; masks are bool, True = may attend (`lab_utils.masks`). Chapter "Efficient attention":
`n_kv_heads` makes the attention grouped-query, and `TinyTransformer(ids, causal=True, cache=KVCache(...))` decodes
with a KV cache, the new tokens' positions starting at `cache.length`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lab_utils.attention import MultiHeadAttention
from lab_utils.kv_cache import KVCache
from lab_utils.masks import causal_mask, combine_masks, padding_mask

__all__ = [
    "MLP",
    "DecoderBlock",
    "Embeddings",
    "TinyEncoderDecoder",
    "TinyTransformer",
    "TransformerBlock",
    "TransformerConfig",
]


@dataclass
class TransformerConfig:
    """Sizes of a `TinyTransformer` / `TinyEncoderDecoder` (`n_layers` counts blocks per stack).

    `n_kv_heads`: key/value heads of every attention layer (grouped-query attention); None = `n_heads` (multi-head).
    """

    vocab_size: int
    max_len: int
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 512  # 4 * d_model, as in Vaswani et al. 2017 (512 -> 2048)
    dropout: float = 0.0
    pad_token_id: int = 0
    n_kv_heads: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "d_model", "n_layers", "n_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads != 0):
            raise ValueError(f"n_kv_heads must be >= 1 and divide n_heads ({self.n_heads}), got {self.n_kv_heads}: "
                             "each KV head serves group_size = n_heads // n_kv_heads query heads")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id}")


class MLP(nn.Module):
    """Position-wise feed-forward network: `Linear -> GELU -> Linear` (GELU as in BERT and GPT)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.d_model, config.d_ff)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(config.d_ff, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.act(self.fc1(x))))  # (B, T, d_model)


class TransformerBlock(nn.Module):
    """Pre-LN block: `x + attn(ln_1(x))`, then `x + mlp(ln_2(x))`. Encoder or decoder depending on `mask`."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = MultiHeadAttention(config.d_model, config.n_heads, n_kv_heads=config.n_kv_heads,
                                       dropout=config.dropout)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        *,
        need_weights: bool = False,
        cache: KVCache | None = None,
        layer_idx: int | None = None,
    ) -> Tensor:
        """`x`: `(B, T, d_model)` -> `(B, T, d_model)`; with a cache, `x` holds the new tokens only."""
        attn = self.attn(self.ln_1(x), mask=mask, need_weights=need_weights, cache=cache, layer_idx=layer_idx)
        x = x + self.dropout(attn)  # (B, T, d_model)
        return x + self.mlp(self.ln_2(x))  # (B, T, d_model)


class DecoderBlock(nn.Module):
    """Encoder-decoder decoder block: causal self-attention, cross-attention to the encoder, MLP (all pre-LN)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        kv = {"n_kv_heads": config.n_kv_heads, "dropout": config.dropout}
        self.self_attn = MultiHeadAttention(config.d_model, config.n_heads, **kv)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.cross_attn = MultiHeadAttention(config.d_model, config.n_heads, **kv)
        self.ln_3 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: Tensor,
        context: Tensor,
        self_mask: Tensor | None = None,
        cross_mask: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> Tensor:
        """`x`: `(B, T_dec, d_model)`, `context`: encoder output `(B, T_enc, d_model)` -> `(B, T_dec, d_model)`."""
        x = x + self.dropout(self.self_attn(self.ln_1(x), mask=self_mask, need_weights=need_weights))
        # Queries from the decoder, keys/values from the encoder: weights (B, nh, T_dec, T_enc).
        x = x + self.dropout(self.cross_attn(self.ln_2(x), context=context, mask=cross_mask, need_weights=need_weights))
        return x + self.mlp(self.ln_3(x))  # (B, T_dec, d_model)


class Embeddings(nn.Module):
    """Token embedding + learned absolute position embedding (BERT, GPT-2), with input validation."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: Tensor, *, offset: int = 0) -> Tensor:
        """`(B, T)` ids at positions `offset .. offset + T - 1` -> `(B, T, d_model)` (offset: tokens cached before)."""
        if not isinstance(input_ids, Tensor) or input_ids.dtype not in (torch.int64, torch.int32):
            kind = input_ids.dtype if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise TypeError(f"input_ids must be an integer (long) tensor of token ids, got {kind}")
        if input_ids.ndim != 2:
            shape = tuple(input_ids.shape)
            raise ValueError(f"input_ids must have shape (B, T), got {shape}; add a batch dim with ids[None]")
        T = input_ids.shape[1]
        if not 1 <= T <= self.config.max_len:
            raise ValueError(f"sequence length must be in [1, max_len={self.config.max_len}], got {T}")
        if offset + T > self.config.max_len:
            raise ValueError(f"positions {offset}..{offset + T - 1} exceed max_len={self.config.max_len} (the cache "
                             f"holds {offset} tokens): learned positions end there; start a new cache on a shorter "
                             "context")
        if input_ids.min() < 0 or input_ids.max() >= self.config.vocab_size:
            raise ValueError(
                f"token ids must be in [0, vocab_size={self.config.vocab_size}), got "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        pos = torch.arange(offset, offset + T, device=input_ids.device)  # (T,) absolute positions
        return self.dropout(self.tok_emb(input_ids) + self.pos_emb(pos))  # (B, T, d_model)


def _self_attention_mask(
    T: int, attention_mask: Tensor | None, causal: bool, device: torch.device, offset: int = 0
) -> Tensor | None:
    """Causal and/or padding mask, broadcastable to `(B, n_heads, T, offset + T)` (offset: cached keys before the
    `T` queries); None for a bidirectional unpadded batch."""
    causal_part = causal_mask(T, offset=offset, device=device) if causal else None  # (T, offset + T)
    pad_part = None if attention_mask is None else padding_mask(attention_mask).to(device)  # (B, 1, 1, offset + T)
    return combine_masks(causal_part, pad_part)


class TinyTransformer(nn.Module):
    """A tiny transformer: an encoder (`causal=False`, trained with MLM) or a decoder (`causal=True`, next token).

    The weights are the same in both roles; only the mask changes. `lm_head` predicts a token at every
    position: for MLM it is the masked-token head, for a decoder the next-token head. It is tied to the token
    embedding, so it has no weight of its own.

    Args:
        config: the model sizes.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)  # pre-LN needs a final norm before the head
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embeddings.tok_emb.weight  # weight tying (Press & Wolf 2017)
        self.apply(_init_weights)

    def encode(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        causal: bool = False,
        *,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Hidden states `(B, T, d_model)` after the final LayerNorm; arguments as in `forward`."""
        offset = 0
        if cache is not None:
            if not causal:
                raise ValueError("a KV cache needs causal=True: in an encoder every token sees the later ones, so its "
                                 "keys and values change with each new token and cannot be cached")
            if not isinstance(cache, KVCache) or cache.n_layers != self.config.n_layers:
                got = f"KVCache(n_layers={cache.n_layers})" if isinstance(cache, KVCache) else type(cache).__name__
                raise ValueError(f"cache must be a KVCache(n_layers={self.config.n_layers}), got {got}")
            offset = cache.length  # positions of the new tokens start after the cached ones
        if attention_mask is not None and attention_mask.shape != (input_ids.shape[0], offset + input_ids.shape[1]):
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                f"{tuple(input_ids.shape)}" + (f" plus the {offset} cached tokens" if offset else "")
            )
        x = self.embeddings(input_ids, offset=offset)  # (B, T, d_model)
        mask = _self_attention_mask(input_ids.shape[1], attention_mask, causal, x.device, offset)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, need_weights=need_weights, cache=cache, layer_idx=i)
        return self.ln_f(x)  # (B, T, d_model)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        causal: bool = False,
        *,
        need_weights: bool = False,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Logits for every position.

        Args:
            input_ids: `(B, T)` token ids, `T <= max_len`; with a cache, only the tokens not yet cached.
            attention_mask: `(B, T)` 0/1 or bool, 1 = real token; padded keys are hidden. None = no padding.
                With a cache, `(B, cache.length + T)`: it covers the cached keys too.
            causal: True for a decoder (position t sees positions <= t), False for an encoder (sees all).
            need_weights: keep each layer's attention weights, read them with `attention_weights()`.
            cache: a `lab_utils.kv_cache.KVCache(n_layers)` (decoder only): the new tokens sit at positions
                `cache.length ..`, attend to the cached keys and values, and their own are appended to the cache.

        Returns:
            Logits of shape `(B, T, vocab_size)`.

        Raises:
            TypeError / ValueError: on ids that are not integers, of the wrong shape or out of range, on a cache
                with `causal=False` or of another number of layers, or on positions beyond `max_len`.
        """
        return self.lm_head(self.encode(input_ids, attention_mask, causal, need_weights=need_weights, cache=cache))

    def attention_weights(self) -> list[Tensor]:
        """Per-layer weights `(B, n_heads, T, T_k)` of the last forward with `need_weights=True` (`T_k = T` without a
        cache)."""
        weights = [block.attn.attn_weights for block in self.blocks]
        if any(w is None for w in weights):
            raise RuntimeError("no stored attention weights: call the model with need_weights=True first")
        return weights


class TinyEncoderDecoder(nn.Module):
    """A tiny encoder-decoder (Vaswani et al. 2017; T5): bidirectional encoder, causal decoder with cross-attention.

    Encoder and decoder share the embeddings and the tied `lm_head`, as in T5. Each stack has `n_layers` blocks.

    Args:
        config: the model sizes.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder_blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.encoder_ln = nn.LayerNorm(config.d_model)
        self.decoder_blocks = nn.ModuleList(DecoderBlock(config) for _ in range(config.n_layers))
        self.decoder_ln = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.embeddings.tok_emb.weight
        self.apply(_init_weights)

    def forward(
        self,
        input_ids: Tensor,
        decoder_input_ids: Tensor,
        attention_mask: Tensor | None = None,
        decoder_attention_mask: Tensor | None = None,
        *,
        need_weights: bool = False,
    ) -> Tensor:
        """Decoder logits given the source sequence.

        Args:
            input_ids: source ids `(B, T_enc)`.
            decoder_input_ids: target ids so far `(B, T_dec)`.
            attention_mask: `(B, T_enc)` source padding mask (1 = real); hides padded source tokens everywhere.
            decoder_attention_mask: `(B, T_dec)` target padding mask.
            need_weights: keep weights in `decoder_blocks[i].cross_attn.attn_weights` `(B, nh, T_dec, T_enc)`.

        Returns:
            Logits of shape `(B, T_dec, vocab_size)`.
        """
        if decoder_input_ids.ndim != 2 or input_ids.ndim != 2 or decoder_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"input_ids (B, T_enc) and decoder_input_ids (B, T_dec) need the same B, got "
                f"{tuple(input_ids.shape)} and {tuple(decoder_input_ids.shape)}"
            )
        src = self.embeddings(input_ids)  # (B, T_enc, d_model)
        enc_mask = _self_attention_mask(input_ids.shape[1], attention_mask, False, src.device)
        for block in self.encoder_blocks:
            src = block(src, enc_mask, need_weights=need_weights)
        context = self.encoder_ln(src)  # (B, T_enc, d_model)
        x = self.embeddings(decoder_input_ids)  # (B, T_dec, d_model)
        dec_mask = _self_attention_mask(decoder_input_ids.shape[1], decoder_attention_mask, True, x.device)
        cross_mask = None if attention_mask is None else padding_mask(attention_mask).to(x.device)  # (B, 1, 1, T_enc)
        for block in self.decoder_blocks:
            x = block(x, context, dec_mask, cross_mask, need_weights=need_weights)
        return self.lm_head(self.decoder_ln(x))  # (B, T_dec, vocab_size)


def _init_weights(module: nn.Module) -> None:
    """GPT-2 / BERT initialisation: N(0, 0.02) weights, zero biases (0.02 from the GPT-2 and BERT code)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
