"""The reference paper's ECG encoder: a 1D ResNet shared by every lead, then a Transformer over leads.

Each lead ``(T,)`` goes through the same 1D ResNet (ResNet-50: bottleneck blocks 3-4-6-3) and is
pooled and projected to a ``d_model``-wide token (256 in the paper).  A learned class token and the
lead tokens -- each plus a learned embedding of its lead name -- go through a Transformer encoder; the
class token's output is the ECG feature (``out_dim = d_model``).

Lead embeddings have one row per *canonical* lead name and are indexed by the names the encoder is
built with, so an encoder for the six limb leads has exactly the same parameters as a 12-lead one
(weights trained on 12 leads load into it unchanged).  Leads marked absent in ``lead_mask`` are zeroed
before the CNN and ignored by attention (key padding mask), so nothing about the present leads'
handling depends on the values in absent rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .registry import register_ecg_preset

__all__ = [
    "BasicBlock1d",
    "Bottleneck1d",
    "ECGResNetTransformer",
    "ResNet1d",
]


class BasicBlock1d(nn.Module):
    """Two 3-wide convolutions with a residual connection (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        out_ch = width * self.expansion
        pad = kernel_size // 2
        self.conv1 = nn.Conv1d(in_ch, width, kernel_size, stride=stride, padding=pad, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, out_ch, kernel_size, padding=pad, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + identity)


class Bottleneck1d(nn.Module):
    """1x1 reduce, k-wide (strided) conv, 1x1 expand by 4, residual (ResNet-50 block)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, kernel_size: int = 3):
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = nn.Conv1d(in_ch, width, 1, bias=False)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)
        self.bn2 = nn.BatchNorm1d(width)
        self.conv3 = nn.Conv1d(width, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm1d(out_ch)
        self.act = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_ch, out_ch, stride)

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.act(out + identity)


def _shortcut(in_ch: int, out_ch: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm1d(out_ch))


class ResNet1d(nn.Module):
    """A 1D ResNet on single-channel signals ``(N, 1, T) -> (N, C, T / 32)``.

    Args:
        block: ``"bottleneck"`` (ResNet-50 style, expansion 4) or ``"basic"`` (ResNet-18 style).
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)``.
        base_width: width of the first stage (64 in ResNet-50); stage ``i`` has ``base_width * 2**i``.
        kernel_size: width of the non-1x1 convolutions in the blocks.
        stem_kernel: width of the stem convolution (stride 2, then a stride-2 max pool).
    """

    def __init__(
        self,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        base_width: int = 64,
        kernel_size: int = 3,
        stem_kernel: int = 7,
        in_ch: int = 1,
    ):
        super().__init__()
        blocks = {"bottleneck": Bottleneck1d, "basic": BasicBlock1d}
        if block not in blocks:
            raise ConfigError(f"unknown ResNet block {block!r}; use 'bottleneck' or 'basic'")
        cls = blocks[block]
        self.stem = nn.Sequential(
            nn.Conv1d(in_ch, base_width, stem_kernel, stride=2, padding=stem_kernel // 2, bias=False),
            nn.BatchNorm1d(base_width),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages = []
        ch = base_width
        for i, n in enumerate(layers):
            width = base_width * 2**i
            stage = []
            for j in range(n):
                stage.append(cls(ch, width, stride=(2 if (i > 0 and j == 0) else 1), kernel_size=kernel_size))
                ch = width * cls.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.out_channels = ch
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))  # (N, C, T')


class ECGResNetTransformer(nn.Module):
    """Shared per-lead 1D ResNet -> lead tokens -> Transformer with a class token (the paper's design).

    Args:
        leads: lead names of the input rows, a subsequence of the canonical 12 (order = row order).
        block, layers, base_width, kernel_size, stem_kernel: the per-lead :class:`ResNet1d`.
        d_model: token width (256 in the paper) = ``out_dim``.
        n_heads, n_layers, dim_feedforward, dropout: the Transformer encoder (pre-norm, batch first).

    Attributes:
        out_dim: width of the returned feature.
        gradcam_layer: the last CNN stage; its activations are ``(B * L, C, T')`` (lead-major per
            sample: row ``b * L + l`` is lead ``l`` of sample ``b``).
        last_attention: after a forward with ``return_attention=True``, the per-layer attention maps.
    """

    def __init__(
        self,
        leads: Sequence[str] = CANONICAL_LEADS,
        *,
        block: str = "bottleneck",
        layers: Sequence[int] = (3, 4, 6, 3),
        base_width: int = 64,
        kernel_size: int = 3,
        stem_kernel: int = 7,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.1,
    ):
        super().__init__()
        leads = tuple(leads)
        unknown = [lead for lead in leads if lead not in CANONICAL_LEADS]
        if unknown or not leads or len(set(leads)) != len(leads):
            raise ConfigError(
                f"ECG leads must be distinct canonical lead names {CANONICAL_LEADS}; got {leads}"
            )
        if d_model % n_heads:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.leads = leads
        self.out_dim = d_model
        self.cnn = ResNet1d(block, layers, base_width, kernel_size, stem_kernel)
        self.proj = nn.Linear(self.cnn.out_channels, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.lead_embedding = nn.Embedding(len(CANONICAL_LEADS), d_model)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.lead_embedding.weight, std=0.02)
        self.register_buffer(
            "lead_index", torch.tensor([CANONICAL_LEADS.index(lead) for lead in leads]), persistent=False
        )
        layer = nn.TransformerEncoderLayer(
            d_model,
            n_heads,
            dim_feedforward=dim_feedforward or 4 * d_model,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.last_attention: list[Tensor] | None = None

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last CNN stage (activations ``(B * L, C, T')``)."""
        return self.cnn.stages[-1]

    def lead_tokens(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Per-lead tokens ``(B, L, d_model)`` before the Transformer (lead embeddings not added)."""
        b, n_leads, t = x.shape
        if lead_mask is not None:
            x = x * lead_mask.to(x.dtype).unsqueeze(-1)  # absent leads -> zeros, whatever they held
        h = self.cnn(x.reshape(b * n_leads, 1, t))  # (B*L, C, T')
        h = h.mean(dim=-1)  # (B*L, C) global average pool
        return self.proj(h).reshape(b, n_leads, -1)  # (B, L, d)

    def forward(
        self, x: Tensor, lead_mask: Tensor | None = None, return_attention: bool = False
    ) -> Tensor | tuple[Tensor, Tensor]:
        """ECG feature ``(B, out_dim)`` from ``x`` ``(B, L, T)`` in mV.

        Args:
            x: one row per lead of ``self.leads``.
            lead_mask: bool ``(B, L)``, True where the lead is really present.
            return_attention: also return the class token's attention over the lead tokens,
                ``(B, n_layers, n_heads, L)`` (absent leads get 0; the class token's weight on
                itself is left out, so rows sum to less than 1); the per-layer maps are also kept in
                ``last_attention``.  Costs one extra attention pass per layer.
        """
        if x.dim() != 3 or x.shape[1] != len(self.leads):
            raise ConfigError(
                f"ECG input must be (B, {len(self.leads)}, T) for leads {self.leads}; got {tuple(x.shape)}"
            )
        b = x.shape[0]
        tokens = self.lead_tokens(x, lead_mask)  # (B, L, d)
        tokens = tokens + self.lead_embedding(self.lead_index)  # (B, L, d)
        h = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)  # (B, 1 + L, d)
        pad = None
        if lead_mask is not None:
            keep = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=x.device), lead_mask.bool()], dim=1)
            pad = ~keep  # (B, 1 + L), True = ignore
        if not return_attention:
            out = self.transformer(h, src_key_padding_mask=pad)
            return self.norm(out[:, 0])  # (B, d)
        maps = []
        for layer in self.transformer.layers:
            hn = layer.norm1(h) if layer.norm_first else h
            _, w = layer.self_attn(
                hn, hn, hn, key_padding_mask=pad, need_weights=True, average_attn_weights=False
            )  # w: (B, heads, 1 + L, 1 + L)
            maps.append(w[:, :, 0, 1:])  # class token -> lead tokens, (B, heads, L)
            h = layer(h, src_key_padding_mask=pad)
        attention = torch.stack(maps, dim=1)  # (B, n_layers, heads, L)
        self.last_attention = maps
        return self.norm(h[:, 0]), attention


def _factory(name: str, **arch):
    return register_ecg_preset(name, ECGResNetTransformer, **arch)


#: The paper's size: 1D ResNet-50 (bottleneck 3-4-6-3, widths 64..512 x4), 256-d tokens.
ecg_resnet50_transformer = _factory(
    "ecg_resnet50_transformer", block="bottleneck", layers=(3, 4, 6, 3), base_width=64, d_model=256,
    n_heads=4, n_layers=2,
)
#: ResNet-18 style (basic blocks 2-2-2-2).
ecg_resnet18_transformer = _factory(
    "ecg_resnet18_transformer", block="basic", layers=(2, 2, 2, 2), base_width=64, d_model=256,
    n_heads=4, n_layers=2,
)
#: Small CPU variant of the same design (bottleneck 1-1-1-1, base width 16, 128-d tokens).
ecg_resnet_small_transformer = _factory(
    "ecg_resnet_small_transformer", block="bottleneck", layers=(1, 1, 1, 1), base_width=16, d_model=128,
    n_heads=4, n_layers=1,
)
#: Tiny variant for tests (bottleneck 1-1-1-1, base width 8, 64-d tokens, 1 layer).
ecg_resnet_tiny_transformer = _factory(
    "ecg_resnet_tiny_transformer", block="bottleneck", layers=(1, 1, 1, 1), base_width=8, d_model=64,
    n_heads=4, n_layers=1, dropout=0.0,
)
