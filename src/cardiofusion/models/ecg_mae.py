"""Masked-autoencoder pretraining of the ECG ViT (paper 003 stage 1; He et al. 2022, ST-MEM).

Per lead, ``round(mask_ratio * n)`` of the ``n`` patches are hidden (the same count in every lead, chosen
independently per lead as ST-MEM does; Python's ``round``).  The encoder sees only the visible patches
(with their separators); a light Transformer decoder gets the encoded visible tokens back at their
places, a learned mask token everywhere else, its own position and lead embeddings, and predicts every
patch's samples.  The loss is the mean squared error over the **masked** patches of the present leads
only; with ``norm_target`` each target patch is standardised by its own mean and variance first
(``(x - mean) / sqrt(var + 1e-6)``: finite on a flat lead).

The ECG must be whole patches long (``T`` a multiple of ``patch_len``): zero padding would be
reconstructed as if it were signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .ecg_vit import ECGViT

__all__ = ["ECGMaskedAutoencoder", "MAEReconstruction", "masked_patch_loss", "random_patch_mask"]


def random_patch_mask(
    batch: int, n_leads: int, n_patches: int, mask_ratio: float, generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Random per-lead patch masking.

    Returns:
        ``(keep, mask)``: the visible patches' indices ``(B, L, n_keep)`` in increasing order, and the
        bool mask ``(B, L, n)``, True = hidden; every lead hides ``round(mask_ratio * n)`` patches.
        The same ``generator`` state gives the same mask.
    """
    n_mask = int(round(float(mask_ratio) * n_patches))
    if not 0 < n_mask < n_patches:
        raise ConfigError(f"mask_ratio {mask_ratio} hides {n_mask} of {n_patches} patches per lead; "
                          f"it must hide at least one and leave at least one visible")
    source = generator.device if generator is not None else (device or "cpu")
    noise = torch.rand(batch, n_leads, n_patches, generator=generator, device=source)  # (B, L, n)
    keep = noise.argsort(dim=-1)[..., n_mask:].sort(dim=-1).values  # (B, L, n_keep)
    mask = torch.ones(batch, n_leads, n_patches, dtype=torch.bool, device=source)
    mask.scatter_(-1, keep, False)
    target = device if device is not None else source
    return keep.to(target), mask.to(target)


def masked_patch_loss(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Weighted mean over patches of each patch's mean squared error.

    Args:
        pred, target: ``(B, L, n, p)``.
        weight: ``(B, L, n)``, 1 where the patch counts (masked patch of a present lead), 0 elsewhere.
    """
    per_patch = (pred - target).pow(2).mean(dim=-1)  # (B, L, n)
    weight = weight.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum().clamp(min=1.0)


@dataclass
class MAEReconstruction:
    """One masked-autoencoder pass.

    Attributes:
        pred: predicted patches ``(B, L, n, p)`` (in target units: standardised per patch with ``norm_target``).
        target: the patches to predict ``(B, L, n, p)``.
        mask: bool ``(B, L, n)``, True = hidden from the encoder.
        weight: ``(B, L, n)`` the loss weights (hidden patches of present leads).
    """

    pred: Tensor
    target: Tensor
    mask: Tensor
    weight: Tensor


class ECGMaskedAutoencoder(nn.Module):
    """An :class:`~cardiofusion.models.ecg_vit.ECGViT` plus a light decoder, trained to fill in hidden patches.

    Args:
        encoder: the ECG ViT to pretrain (its weights are what stage 2 / 3 reuse).
        mask_ratio: fraction of each lead's patches hidden (0.75 here; the paper's first version 0.8).
        decoder_width, decoder_depth, decoder_heads: the decoder Transformer (ST-MEM: 256, 4, 4).
        norm_target: standardise each target patch (MAE's ``norm_pix_loss``).
    """

    def __init__(
        self,
        encoder: ECGViT,
        *,
        mask_ratio: float = 0.75,
        decoder_width: int = 256,
        decoder_depth: int = 4,
        decoder_heads: int = 4,
        norm_target: bool = False,
    ):
        super().__init__()
        if not isinstance(encoder, ECGViT):
            raise ConfigError(f"the ECG masked autoencoder needs an ECGViT encoder; got {type(encoder).__name__}")
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1); got {mask_ratio}")
        if decoder_width % decoder_heads:
            raise ConfigError(f"decoder_width ({decoder_width}) must be divisible by decoder_heads ({decoder_heads})")
        self.encoder = encoder
        self.mask_ratio = float(mask_ratio)
        self.norm_target = bool(norm_target)
        self.decoder_embed = nn.Linear(encoder.width, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(decoder_width))
        self.decoder_pos_embedding = nn.Parameter(torch.zeros(1, encoder.n_positions + 2, decoder_width))
        self.decoder_lead_embedding = nn.Embedding(len(CANONICAL_LEADS), decoder_width)
        for p in (self.mask_token, self.decoder_pos_embedding, self.decoder_lead_embedding.weight):
            nn.init.trunc_normal_(p, std=0.02)
        layer = nn.TransformerEncoderLayer(
            decoder_width, decoder_heads, dim_feedforward=4 * decoder_width, dropout=0.0, activation="gelu",
            batch_first=True, norm_first=True,
        )
        self.decoder = nn.TransformerEncoder(layer, decoder_depth, enable_nested_tensor=False)
        self.decoder_norm = nn.LayerNorm(decoder_width)
        self.decoder_head = nn.Linear(decoder_width, encoder.patch_len)

    def targets(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """The patches to reconstruct ``(B, L, n, p)`` (standardised per patch with ``norm_target``)."""
        patches = self.encoder.patchify(x, lead_mask)  # (B, L, n, p)
        if not self.norm_target:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, unbiased=False, keepdim=True)
        return (patches - mean) / (var + 1e-6).sqrt()

    def reconstruct(
        self, x: Tensor, lead_mask: Tensor | None = None, generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> MAEReconstruction:
        """Hide patches, encode the visible ones, decode every patch.

        Args:
            x: ``(B, L, T)`` in mV, ``T`` a multiple of ``patch_len``.
            lead_mask: bool ``(B, L)``, True where the lead is present.
            generator: source of the random mask (same state, same mask).
            mask: a given bool ``(B, L, n)`` mask instead (True = hidden, the same count in every lead).
        """
        enc = self.encoder
        enc.check_input(x)
        if x.shape[-1] % enc.patch_len:
            raise ConfigError(f"the ECG masked autoencoder needs whole patches: {x.shape[-1]} samples is not a "
                              f"multiple of patch_len {enc.patch_len}")
        b, n_leads = x.shape[:2]
        patches = enc.patchify(x, lead_mask)  # (B, L, n, p)
        n = patches.shape[2]
        if mask is None:
            keep, mask = random_patch_mask(b, n_leads, n, self.mask_ratio, generator, device=x.device)
        else:
            mask = mask.to(x.device).bool()
            counts = (~mask).sum(dim=-1)
            if mask.shape != (b, n_leads, n) or not bool((counts == counts.flatten()[0]).all()):
                raise ConfigError(f"an MAE mask must be bool (B, L, n) = {(b, n_leads, n)} with the same number "
                                  f"of visible patches in every lead; got {tuple(mask.shape)}")
            keep = (~mask).float().argsort(dim=-1, descending=True, stable=True)[..., :int(counts.flatten()[0])]
            keep = keep.sort(dim=-1).values
        tokens = enc.embed_patches(patches)  # (B, L, n, d)
        d = tokens.shape[-1]
        visible = tokens.gather(2, keep.unsqueeze(-1).expand(-1, -1, -1, d))  # (B, L, n_keep, d)
        h, _, _ = enc.encode_tokens(visible, lead_mask)  # (B, L, n_keep + 2, d)
        h = self.decoder_embed(enc.norm(h))  # (B, L, n_keep + 2, dd)
        dd = h.shape[-1]
        full = self.mask_token.expand(b, n_leads, n, dd)
        full = full.scatter(2, keep.unsqueeze(-1).expand(-1, -1, -1, dd), h[:, :, 1:-1])  # (B, L, n, dd)
        seq = torch.cat([h[:, :, :1], full, h[:, :, -1:]], dim=2)  # (B, L, n + 2, dd)
        pos = torch.cat([self.decoder_pos_embedding[:, :n + 1], self.decoder_pos_embedding[:, -1:]], dim=1)
        seq = seq + pos.unsqueeze(1) + self.decoder_lead_embedding(enc.lead_index)[None, :, None, :]
        pad = enc._key_padding(lead_mask, b, n + 2, x.device)
        if pad is not None and enc.cls_token is not None:
            pad = pad[:, 1:]  # the decoder has no class token
        out = self.decoder(seq.reshape(b, n_leads * (n + 2), dd), src_key_padding_mask=pad)
        pred = self.decoder_head(self.decoder_norm(out)).reshape(b, n_leads, n + 2, -1)[:, :, 1:-1]  # (B, L, n, p)
        present = torch.ones(b, n_leads, dtype=torch.bool, device=x.device) if lead_mask is None else \
            lead_mask.to(x.device).bool()
        weight = (mask & present.unsqueeze(-1)).to(x.dtype)  # (B, L, n)
        return MAEReconstruction(pred=pred, target=self.targets(x, lead_mask), mask=mask, weight=weight)

    def forward(
        self, x: Tensor, lead_mask: Tensor | None = None, generator: torch.Generator | None = None,
        mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Named loss terms: ``loss`` (total) = ``mae_masked_mse`` (squared error on the hidden patches only)."""
        rec = self.reconstruct(x, lead_mask, generator=generator, mask=mask)
        mse = masked_patch_loss(rec.pred, rec.target, rec.weight)
        return {"loss": mse, "mae_masked_mse": mse.detach()}
