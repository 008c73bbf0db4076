"""An ST-MEM-style Vision Transformer over per-lead ECG patches (paper 003's ECG encoder).

Each lead ``(T,)`` is cut into patches of ``patch_len`` samples (one lead x ``patch_len``: Na et al. 2024,
ST-MEM), every patch is embedded by one shared linear layer, and each lead becomes the token sequence
``[SEP, patch_1, ..., patch_n, SEP]``.  Every token gets a learned position embedding (shared by all
leads; the two separators take the first and the last position) and the learned embedding of its lead
*name*; the leads' sequences are concatenated into one sequence of ``L * (n + 2)`` tokens (plus a class
token with ``pool="cls"``) and go through a pre-norm Transformer encoder.  The ECG feature is the mean of
the present leads' patch tokens (ST-MEM, ``pool="mean"``) or the class token (``pool="cls"``), after a
final LayerNorm.

As :class:`~cardiofusion.models.ecg.ECGResNetTransformer`: lead embeddings have one row per canonical
lead, indexed by the names the encoder is built with, so a six-lead encoder has exactly the parameters
of a 12-lead one; leads marked absent in ``lead_mask`` are zeroed and their tokens are masked out of
attention (key padding) and of the pooling, so nothing about the present leads depends on them.

A recording whose length is not a multiple of ``patch_len`` is zero-padded on the right to whole
patches; :class:`~cardiofusion.models.ecg_mae.ECGMaskedAutoencoder` asks for whole patches instead.

The pieces are public so that the masked autoencoder can encode a subset of patches:
:meth:`ECGViT.patchify` -> :meth:`ECGViT.embed_patches` -> (choose tokens) -> :meth:`ECGViT.encode_tokens`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .registry import register_ecg_preset

__all__ = ["ECGViT", "check_leads"]


def check_leads(leads: Sequence[str]) -> tuple[str, ...]:
    """``leads`` as a tuple; :class:`ConfigError` unless distinct canonical lead names."""
    leads = tuple(leads)
    unknown = [lead for lead in leads if lead not in CANONICAL_LEADS]
    if unknown or not leads or len(set(leads)) != len(leads):
        raise ConfigError(f"ECG leads must be distinct canonical lead names {CANONICAL_LEADS}; got {leads}")
    return leads


class ECGViT(nn.Module):
    """ViT over per-lead patches with lead, position and separator embeddings (ST-MEM design).

    Args:
        leads: lead names of the input rows, a subsequence of the canonical 12 (order = row order).
        patch_len: samples per patch (ST-MEM: 75 at 250 Hz, i.e. 0.3 s; use 150 for the same span at 500 Hz).
        max_len: longest recording (samples) the position table covers; longer inputs are refused.
        width: token width = ``out_dim``.
        depth: Transformer layers.
        n_heads: attention heads (``width`` must be divisible by it).
        mlp_ratio: feed-forward width / ``width``.
        dropout: dropout in the Transformer layers and on the embedded tokens.
        pool: ``"mean"`` (mean of the present leads' patch tokens, ST-MEM) or ``"cls"`` (a class token).

    Attributes:
        out_dim: width of the returned feature.
        n_positions: patches per lead the position table covers (``ceil(max_len / patch_len)``).
        gradcam_layer: an identity module that sees the patch tokens entering the last Transformer layer
            laid out as per-lead feature maps ``(B * L, width, n_patches)`` (row ``b * L + l`` is lead
            ``l`` of sample ``b``), the layout the ECG Grad-CAM of :mod:`cardiofusion.explain` expects.
        last_attention: after a forward with ``return_attention=True``, the per-layer maps ``(B, heads, L)``.
    """

    def __init__(
        self,
        leads: Sequence[str] = CANONICAL_LEADS,
        *,
        patch_len: int = 75,
        max_len: int = 5000,
        width: int = 768,
        depth: int = 12,
        n_heads: int = 12,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        pool: str = "mean",
    ):
        super().__init__()
        self.leads = check_leads(leads)
        if pool not in ("mean", "cls"):
            raise ConfigError(f"ECG ViT pool must be 'mean' or 'cls'; got {pool!r}")
        if int(patch_len) < 1 or int(max_len) < int(patch_len):
            raise ConfigError(f"ECG ViT needs 1 <= patch_len <= max_len; got patch_len {patch_len}, max_len {max_len}")
        if width % n_heads:
            raise ConfigError(f"ECG ViT width ({width}) must be divisible by n_heads ({n_heads})")
        if depth < 1:
            raise ConfigError(f"ECG ViT depth must be >= 1; got {depth}")
        self.patch_len = int(patch_len)
        self.max_len = int(max_len)
        self.n_positions = math.ceil(self.max_len / self.patch_len)
        self.width = self.out_dim = int(width)
        self.pool = pool
        self.patch_embed = nn.Linear(self.patch_len, width)
        # position 0: left separator; 1..n_positions: patches; n_positions + 1: right separator
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.n_positions + 2, width))
        self.sep_embedding = nn.Parameter(torch.zeros(width))
        self.lead_embedding = nn.Embedding(len(CANONICAL_LEADS), width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width)) if pool == "cls" else None
        for p in (self.pos_embedding, self.sep_embedding, self.lead_embedding.weight):
            nn.init.trunc_normal_(p, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.register_buffer(
            "lead_index", torch.tensor([CANONICAL_LEADS.index(lead) for lead in self.leads]), persistent=False
        )
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width, n_heads, dim_feedforward=int(round(mlp_ratio * width)), dropout=dropout, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.token_map = nn.Identity()  # Grad-CAM hook point, (B * L, width, n)
        self.norm = nn.LayerNorm(width)
        self.last_attention: list[Tensor] | None = None

    @property
    def gradcam_layer(self) -> nn.Module:
        """Per-lead token maps ``(B * L, width, n_patches)`` entering the last Transformer layer."""
        return self.token_map

    # ------------------------------------------------------------------ pieces (used by the MAE too)
    def check_input(self, x: Tensor) -> None:
        """:class:`ConfigError` unless ``x`` is ``(B, len(leads), T)`` with ``T <= max_len``."""
        if x.dim() != 3 or x.shape[1] != len(self.leads):
            raise ConfigError(
                f"ECG input must be (B, {len(self.leads)}, T) for leads {self.leads}; got {tuple(x.shape)}"
            )
        if x.shape[-1] > self.max_len:
            raise ConfigError(f"ECG input has {x.shape[-1]} samples; this ViT's position table covers max_len "
                              f"{self.max_len} (build it with a larger max_len)")

    def patchify(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """``(B, L, T)`` -> patches ``(B, L, n, patch_len)``, zero-padded to whole patches, absent leads zeroed."""
        if lead_mask is not None:
            x = x * lead_mask.to(x.dtype).unsqueeze(-1)  # absent leads -> zeros, whatever they held
        n = math.ceil(x.shape[-1] / self.patch_len)
        x = F.pad(x, (0, n * self.patch_len - x.shape[-1]))  # (B, L, n * p)
        return x.unflatten(-1, (n, self.patch_len))  # (B, L, n, p)

    def embed_patches(self, patches: Tensor) -> Tensor:
        """Patch tokens ``(B, L, n, width)``: linear embedding + position (1..n) + lead embeddings."""
        n = patches.shape[2]
        tokens = self.patch_embed(patches)  # (B, L, n, d)
        tokens = tokens + self.pos_embedding[:, 1:n + 1].unsqueeze(1)  # (1, 1, n, d)
        return tokens + self.lead_embedding(self.lead_index)[None, :, None, :]  # (1, L, 1, d)

    def separators(self, b: int) -> tuple[Tensor, Tensor]:
        """Left and right separator tokens ``(B, L, 1, width)`` (separator + position + lead embeddings)."""
        lead = self.lead_embedding(self.lead_index)[None, :, None, :]  # (1, L, 1, d)
        left = self.sep_embedding + self.pos_embedding[:, :1] + lead  # (1, L, 1, d)
        right = self.sep_embedding + self.pos_embedding[:, -1:] + lead
        shape = (b, len(self.leads), 1, self.width)
        return left.expand(shape), right.expand(shape)

    def _key_padding(self, lead_mask: Tensor | None, b: int, per_lead: int, device) -> Tensor | None:
        """``(B, S)`` True = ignore: every token of an absent lead (rows with no present lead keep all)."""
        if lead_mask is None:
            return None
        present = lead_mask.to(device).bool()  # (B, L)
        present = present | ~present.any(dim=1, keepdim=True)  # an all-absent row would give NaN attention
        pad = ~present.repeat_interleave(per_lead, dim=1)  # (B, L * per_lead)
        if self.cls_token is not None:
            pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=device), pad], dim=1)
        return pad

    def encode_tokens(
        self, tokens: Tensor, lead_mask: Tensor | None = None, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Run the Transformer on chosen patch tokens.

        Args:
            tokens: ``(B, L, m, width)`` from :meth:`embed_patches` (all ``n`` patches, or any ``m`` of them).
            lead_mask: bool ``(B, L)``, True where the lead is present.
            return_attention: also compute the pooled query's attention per lead (see :meth:`forward`).

        Returns:
            ``(h, cls, attention)``: the un-normalised outputs ``(B, L, m + 2, width)`` (separators at
            ``[..., 0, :]`` and ``[..., -1, :]``), the class token's output ``(B, width)`` (None with
            ``pool="mean"``), and ``(B, depth, heads, L)`` attention or None.
        """
        b, n_leads, m, d = tokens.shape
        left, right = self.separators(b)
        h = torch.cat([left, tokens, right], dim=2)  # (B, L, m + 2, d)
        h = self.dropout(h.reshape(b, n_leads * (m + 2), d))  # (B, S, d)
        n_cls = 0
        if self.cls_token is not None:
            h = torch.cat([self.cls_token.expand(b, -1, -1), h], dim=1)  # (B, 1 + S, d)
            n_cls = 1
        pad = self._key_padding(lead_mask, b, m + 2, tokens.device)
        layers = list(self.transformer.layers)
        maps = []
        for i, layer in enumerate(layers):
            if i == len(layers) - 1:
                h = self._through_token_map(h, n_cls, b, n_leads, m)
            if return_attention:
                maps.append(self._layer_attention(layer, h, pad, lead_mask, n_cls, b, n_leads, m))
            h = layer(h, src_key_padding_mask=pad)
        cls = h[:, 0] if n_cls else None
        out = h[:, n_cls:].reshape(b, n_leads, m + 2, d)
        attention = torch.stack(maps, dim=1) if return_attention else None  # (B, depth, heads, L)
        if return_attention:
            self.last_attention = maps
        return out, cls, attention

    def _through_token_map(self, h: Tensor, n_cls: int, b: int, n_leads: int, m: int) -> Tensor:
        d = h.shape[-1]
        seq = h[:, n_cls:].reshape(b, n_leads, m + 2, d)
        patches = seq[:, :, 1:-1].reshape(b * n_leads, m, d).transpose(1, 2)  # (B * L, d, m)
        patches = self.token_map(patches).transpose(1, 2).reshape(b, n_leads, m, d)
        seq = torch.cat([seq[:, :, :1], patches, seq[:, :, -1:]], dim=2).reshape(b, n_leads * (m + 2), d)
        return torch.cat([h[:, :n_cls], seq], dim=1)

    def _layer_attention(self, layer, h, pad, lead_mask, n_cls, b, n_leads, m) -> Tensor:
        """The pooled output's attention over the leads in one layer, ``(B, heads, L)``."""
        hn = layer.norm1(h) if layer.norm_first else h
        _, w = layer.self_attn(hn, hn, hn, key_padding_mask=pad, need_weights=True,
                               average_attn_weights=False)  # (B, heads, S, S)
        if n_cls:
            q = w[:, :, 0]  # (B, heads, S) class token's row
        else:  # mean pooling: the mean of the present leads' patch-token rows
            rows = w.reshape(b, w.shape[1], n_leads, m + 2, -1)[:, :, :, 1:-1]  # (B, h, L, m, S)
            weight = self._pool_weight(lead_mask, b, n_leads, h.device, h.dtype)  # (B, L)
            q = (rows.mean(dim=3) * weight[:, None, :, None]).sum(dim=2)  # (B, heads, S)
        per_lead = q[:, :, n_cls:].reshape(b, q.shape[1], n_leads, m + 2)  # (B, heads, L, m + 2)
        return per_lead.sum(dim=-1)  # (B, heads, L)

    def _pool_weight(self, lead_mask: Tensor | None, b: int, n_leads: int, device, dtype) -> Tensor:
        """Mean-pooling weights over leads ``(B, L)``: uniform over present leads (all leads if none)."""
        if lead_mask is None:
            present = torch.ones(b, n_leads, device=device, dtype=dtype)
        else:
            present = lead_mask.to(device).bool()
            present = (present | ~present.any(dim=1, keepdim=True)).to(dtype)
        return present / present.sum(dim=1, keepdim=True)

    def pool_tokens(self, h: Tensor, cls: Tensor | None, lead_mask: Tensor | None = None) -> Tensor:
        """The feature ``(B, out_dim)`` from :meth:`encode_tokens` outputs (mean of patch tokens, or class)."""
        if cls is not None:
            return self.norm(cls)
        b, n_leads = h.shape[:2]
        weight = self._pool_weight(lead_mask, b, n_leads, h.device, h.dtype)  # (B, L)
        pooled = (h[:, :, 1:-1].mean(dim=2) * weight.unsqueeze(-1)).sum(dim=1)  # (B, d)
        return self.norm(pooled)

    # ------------------------------------------------------------------ encoder face
    def forward(
        self, x: Tensor, lead_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """ECG feature ``(B, out_dim)`` from ``x`` ``(B, L, T)`` in mV.

        Args:
            x: one row per lead of ``self.leads``.
            lead_mask: bool ``(B, L)``, True where the lead is really present.
            return_attention: also return ``(B, depth, heads, L)``: per layer, the attention of the pooled
                query (the class token, or with mean pooling the mean of the present patch tokens' rows)
                summed over each lead's tokens; absent leads get 0, the class token's weight on itself is
                left out.  Costs one extra attention pass per layer.
        """
        self.check_input(x)
        tokens = self.embed_patches(self.patchify(x, lead_mask))  # (B, L, n, d)
        h, cls, attention = self.encode_tokens(tokens, lead_mask, return_attention)
        feat = self.pool_tokens(h, cls, lead_mask)
        return (feat, attention) if return_attention else feat


def _factory(name: str, doc: str, **arch):
    return register_ecg_preset(name, ECGViT, doc, **arch)


#: Paper size (ST-MEM ViT-B/75): 768 wide, 12 layers, 12 heads, 75-sample patches, mean-pooled tokens.
ecg_vit_base = _factory(
    "ecg_vit_base", "paper size (ST-MEM ViT-B/75).", patch_len=75, width=768, depth=12, n_heads=12,
)
#: ST-MEM ViT-S/75: 384 wide, 12 layers, 6 heads.
ecg_vit_small = _factory(
    "ecg_vit_small", "ST-MEM ViT-S/75.", patch_len=75, width=384, depth=12, n_heads=6,
)
#: Tiny configuration for tests and CPU demos: 32-sample patches, 32 wide, 2 layers, 4 heads.
ecg_vit_tiny = _factory(
    "ecg_vit_tiny", "tiny test/CPU configuration.", patch_len=32, width=32, depth=2, n_heads=4,
)
