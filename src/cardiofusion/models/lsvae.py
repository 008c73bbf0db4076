"""LS-EMVAE (paper 002): a lead-specific multimodal VAE with hierarchical experts (HiME).

Every lead is a modality.  Each lead has its own Gaussian encoder (:class:`LeadEncoder`, kept in a
``ModuleDict`` keyed by lead *name*, never by position), and the lead posteriors are fused in two levels:

* inside each lead group (default ``{I, II, III}``, ``{aVR, aVL, aVF}``, ``{V1, V2, V3}``, ``{V4, V5, V6}``)
  a product of experts (PoE, precision-weighted) of the present leads *and the standard-normal prior
  expert* (default: the prior joins every group; option ``prior="first_group"``: only the first group);
  an absent lead (``lead_mask`` False) is left out of the product;
* across groups a mixture of experts (MoE) with equal weights over the groups that hold at least one
  present lead (a group of absent leads would only add the prior); with no lead present at all the
  fused posterior is the prior.  ``mixture`` says how the mixture is sampled:

  - ``"moment"`` (default): the Gaussian with the mixture's mean and variance
    (``mu = sum w mu_k``, ``var = sum w (var_k + mu_k^2) - mu^2``).  It is the Gaussian closest to the
    mixture (moment matching minimises ``KL(mixture || Gaussian)``), its KL to the prior is exact and in
    closed form for the distribution z is drawn from, and every group's encoders get reconstruction
    gradient at every step;
  - ``"param_avg"``: averaged means and log-variances (what the original code calls the mixture: a
    geometric mean of the variances, narrower than the mixture when the groups disagree);
  - ``"sample"``: the mixture itself, one group drawn per sample (MMVAE style); its KL has no closed
    form, so the loss uses the upper bound ``sum_k w_k KL(q_k || p)``, and only the drawn group's
    encoders get reconstruction gradient for that sample.

One z is drawn from the fused posterior and decoded into every lead, by one decoder per lead (default,
``decoder="per_lead"``) or by one shared decoder that also sees a learned embedding of the lead name
(``decoder="conditioned"``).  The loss (:meth:`LSEMVAE.loss`) is a dict of named terms:
``recon`` = squared error summed over present leads and samples times ``recon_scale`` (1e-3), per sample;
``kl`` = KL of the posterior z was actually sampled from (see above), per sample; ``align`` = mean squared
distance between each present lead's posterior mean and a target (``align_target``: ``"lead_mean"`` the
mean of the present leads' means, as the original code, or ``"fused"`` the fused posterior's mean);
``loss = recon + beta * kl + align_weight * align`` with ``beta`` from :func:`beta_schedule` (linear to 1
over ``beta_anneal_epochs`` epochs).

Baselines (``fusion``, default ``"hime"``): ``"mopoe"`` (MoPoE, Sutter et al. 2021: an equal-weight
mixture over every non-empty subset of the present leads of the product of that subset's experts with the
prior expert, :func:`mopoe_posterior`; ``2**12 - 1`` subsets, computed as one matrix product) and
``"single"`` (one :class:`LeadEncoder` over all leads as input channels -> one Gaussian, one decoder with a
channel per lead; with ``beta_max > 1`` the single-encoder beta-VAE of Higgins et al. 2017; its fine-tuning
face is :class:`SingleVAEECGEncoder`, registered as ``betavae``).  ``beta_max`` scales the annealed KL
weight; ``free_bits`` (nats per latent dimension, :func:`kl_term`) floors each dimension's batch-mean KL in
the loss against posterior collapse -- 0 by default, as the paper (which has none).

``reference_compat=True`` reproduces the public code instead (a regression anchor, not a recommendation):
the prior expert is never used (it falls outside every group), PoE with ``eps = 1e-8`` added to the
variances and to the fused variance, the "mixture" averages means and log-variances, one shared
unconditioned decoder gives every lead the same reconstruction, the KL is taken on the average of the
lead encoders' means and log-variances (not the sampled posterior), the alignment target is the mean of
the lead means, and the lead mask is ignored (the original has none).  Its groups are the configured ones, which for the 12
canonical leads are exactly the original's positional chunks of three (the original, given fewer leads,
would chunk by position and drop leads; that is not reproduced).  In that mode the ``decoder``,
``prior``, ``mixture`` and ``align_target`` settings are not used.

Fine-tuning face: :class:`LSVAEECGEncoder` (registered ECG encoders ``lsvae`` and ``lsvae_tiny``) holds
only the lead encoders' convolutional part and mean layer, keyed by lead name, and returns the
concatenated posterior means ``(B, L * latent_dim)`` (optionally through the paper head's hidden layer,
``head_hidden=128``).  Built for any lead subset, it takes the encoders of its own leads from a
pretrained VAE by name (:meth:`LSVAEECGEncoder.load_vae_weights`), so a six-lead model built from a
12-lead VAE gets the I, II, III, aVR, aVL, aVF encoders whatever order anything was stored in.
:class:`LSVAEHead` is the paper's classifier (posterior means -> Linear 128 -> ReLU -> Dropout 0.5 -> K).

Architectures (:data:`ARCHS`): ``"paper"`` is the published design (three Conv1d 1->16->32->64, kernel 3,
stride 2, ReLU, flattened at 5,000 samples -> two Linear layers to a 256-d mean and log-variance;
decoder Linear -> 64 x 625 -> three ConvTranspose1d back to 5,000 samples; 20,488,352 parameters per
encoder, 10,290,353 per decoder).  Its flatten ties the input length to ``n_samples``.  ``"small"``
(8/16/32 channels, 32-d latent) and ``"tiny"`` (tests) average-pool the convolution output to
``pool_length`` positions before the linear layers, so their encoders take any input length; they are the
CPU variants, and the registered ECG encoder's default (``lsvae``: ``arch="small"``), since every
registered encoder must run on short CPU inputs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..configfile import reject_unknown_fields
from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .registry import register_ecg_encoder

__all__ = [
    "ARCHS",
    "DEFAULT_GROUPS",
    "LSEMVAE",
    "LSVAEConfig",
    "LSVAEECGEncoder",
    "LSVAEHead",
    "LSVAEOutput",
    "LeadDecoder",
    "LeadEncoder",
    "Posterior",
    "SingleVAEECGEncoder",
    "alignment_loss",
    "beta_schedule",
    "build_lsvae",
    "gaussian_kl",
    "gaussian_kl_dims",
    "hime_posterior",
    "kl_term",
    "lead_subsets",
    "mixture_of_gaussians",
    "mixture_posterior",
    "mopoe_posterior",
    "product_of_experts",
    "reference_posterior",
]

#: Architectures by name: conv channels, latent width, pooled length before the linear layers (0: flatten).
ARCHS: dict[str, dict[str, Any]] = {
    "paper": {"channels": (16, 32, 64), "latent_dim": 256, "pool_length": 0},
    "small": {"channels": (8, 16, 32), "latent_dim": 32, "pool_length": 32},
    "tiny": {"channels": (4, 8, 8), "latent_dim": 8, "pool_length": 8},
}
#: The paper's lead groups.
DEFAULT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("I", "II", "III"), ("aVR", "aVL", "aVF"), ("V1", "V2", "V3"), ("V4", "V5", "V6"),
)
MIXTURES = ("moment", "param_avg", "sample")
FUSIONS = ("hime", "mopoe", "single")
DECODERS = ("per_lead", "conditioned")
PRIORS = ("every_group", "first_group")
ALIGN_TARGETS = ("lead_mean", "fused")
#: The original code's variance floor (``reference_compat`` only).
REFERENCE_EPS = 1e-8


def _check_leads(leads: Sequence[str], what: str = "ECG leads") -> tuple[str, ...]:
    leads = tuple(str(lead) for lead in leads)
    unknown = [lead for lead in leads if lead not in CANONICAL_LEADS]
    if unknown or not leads or len(set(leads)) != len(leads):
        raise ConfigError(f"{what} must be distinct canonical lead names {CANONICAL_LEADS}; got {leads}")
    return leads


def _choice(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}; use one of {', '.join(allowed)}")
    return value


def resolve_arch(arch: str, **overrides: Any) -> dict[str, Any]:
    """The named architecture with ``channels`` / ``latent_dim`` / ``pool_length`` overrides (None = keep)."""
    base = dict(ARCHS[_choice(arch, tuple(ARCHS), "LS-EMVAE architecture")])
    base.update({k: v for k, v in overrides.items() if v is not None})
    base["channels"] = tuple(int(c) for c in base["channels"])
    if not base["channels"] or min(base["channels"]) < 1 or int(base["latent_dim"]) < 1 or int(base["pool_length"]) < 0:
        raise ConfigError(f"bad LS-EMVAE architecture {base}")
    return base


# --------------------------------------------------------------------------------------------------
# Encoders and decoders
# --------------------------------------------------------------------------------------------------
def conv_length(n: int, n_layers: int, kernel_size: int = 3) -> int:
    """Length after ``n_layers`` stride-2 convolutions with ``padding = kernel_size // 2``."""
    for _ in range(n_layers):
        n = (n + 2 * (kernel_size // 2) - kernel_size) // 2 + 1
    return n


class LeadEncoder(nn.Module):
    """One lead ``(N, 1, T)`` (or ``in_channels`` leads) -> Gaussian posterior ``(mu, logvar)``, each ``(N, latent_dim)``.

    Stride-2 Conv1d + ReLU layers (``channels``), then either the whole map flattened (``pool_length=0``,
    the paper's design, input length fixed at ``n_samples``) or the map average-pooled to ``pool_length``
    positions first (any input length), then one Linear layer to the mean and one to the log-variance.

    Args:
        with_logvar: False builds only the mean layer (the fine-tuning face uses posterior means only).
        in_channels: input channels (1: one lead; the single-encoder beta-VAE takes all its leads at once).
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32, 64),
        kernel_size: int = 3,
        latent_dim: int = 256,
        n_samples: int = 5000,
        pool_length: int = 0,
        with_logvar: bool = True,
        in_channels: int = 1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = int(in_channels)
        for c in channels:
            layers += [nn.Conv1d(c_in, c, kernel_size, stride=2, padding=kernel_size // 2), nn.ReLU()]
            c_in = c
        self.conv = nn.Sequential(*layers)
        self.n_samples = int(n_samples)
        self.pool_length = int(pool_length)
        if self.pool_length:
            self.pool: nn.Module = nn.AdaptiveAvgPool1d(self.pool_length)
            length = self.pool_length
        else:
            self.pool = nn.Identity()
            length = conv_length(self.n_samples, len(channels), kernel_size)
            if length < 1:
                raise ConfigError(f"n_samples={n_samples} is too short for {len(channels)} stride-2 convolutions")
        self.fc_mu = nn.Linear(c_in * length, latent_dim)
        self.fc_logvar = nn.Linear(c_in * length, latent_dim) if with_logvar else None

    def features(self, x: Tensor) -> Tensor:
        """Convolution maps ``(N, C, T')`` of ``x`` ``(N, 1, T)``."""
        if not self.pool_length and x.shape[-1] != self.n_samples:
            raise ConfigError(
                f"this LS-EMVAE encoder flattens its input and takes exactly {self.n_samples} samples per lead; "
                f"got {x.shape[-1]}"
            )
        return self.conv(x)

    def head(self, h: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(mu, logvar)`` from the convolution maps (``logvar`` None without the log-variance layer)."""
        flat = self.pool(h).flatten(1)  # (N, C * length)
        return self.fc_mu(flat), (None if self.fc_logvar is None else self.fc_logvar(flat))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.head(self.features(x))


class LeadDecoder(nn.Module):
    """``z`` ``(N, latent_dim + cond_dim)`` -> one lead ``(N, n_samples)``.

    Linear to ``channels[-1] x n_samples / 2**len(channels)``, then ConvTranspose1d layers (kernel 4,
    stride 2, padding 1: each doubles the length) back through the channels in reverse to one channel,
    ReLU between them and none at the output (the paper's decoder for ``channels=(16, 32, 64)``).
    ``out_channels`` > 1 (the single-encoder beta-VAE) gives ``(N, out_channels, n_samples)``.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64), latent_dim: int = 256, n_samples: int = 5000,
                 cond_dim: int = 0, out_channels: int = 1):
        super().__init__()
        n_up = len(channels)
        if n_samples % 2**n_up or n_samples < 2**n_up:
            raise ConfigError(f"n_samples must be a multiple of {2**n_up} for this decoder; got {n_samples}")
        self.length = n_samples // 2**n_up
        self.width = int(channels[-1])
        self.fc = nn.Linear(latent_dim + cond_dim, self.width * self.length)
        rev = [*reversed([int(c) for c in channels]), int(out_channels)]
        self.out_channels = int(out_channels)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(rev[:-1], rev[1:])):
            layers.append(nn.ConvTranspose1d(a, b, 4, stride=2, padding=1))
            if i < n_up - 1:
                layers.append(nn.ReLU())
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h = self.fc(z).view(z.shape[0], self.width, self.length)  # (N, C, T / 2**n)
        out = self.deconv(h)  # (N, out_channels, T)
        return out.squeeze(1) if self.out_channels == 1 else out


class LSVAEHead(nn.Sequential):
    """The paper's classifier: ``(B, in_dim)`` posterior means -> Linear ``hidden`` -> ReLU -> Dropout -> ``n_outputs``."""

    def __init__(self, in_dim: int, n_outputs: int = 2, hidden: int = 128, dropout: float = 0.5):
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_outputs))


# --------------------------------------------------------------------------------------------------
# Gaussian algebra: PoE, mixtures, KL
# --------------------------------------------------------------------------------------------------
def gaussian_kl_dims(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, 1))`` per dimension: ``(..., D) -> (..., D)``."""
    return 0.5 * (torch.exp(logvar) + mu.pow(2) - 1.0 - logvar)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` summed over the last dimension: ``(..., D) -> (...)``."""
    return gaussian_kl_dims(mu, logvar).sum(-1)


def product_of_experts(mu: Tensor, logvar: Tensor, mask: Tensor | None = None, *, prior: bool = True
                       ) -> tuple[Tensor, Tensor]:
    """Precision-weighted product of Gaussian experts ``(..., E, D) -> (..., D)`` (mean, log-variance).

    Args:
        mask: bool ``(..., E)``, False = expert absent (left out of the product).
        prior: include the standard-normal prior expert (precision 1, mean 0).  Without it, a product of
            no experts is returned as the prior (callers give such a group no mixture weight).
    """
    prec = torch.exp(-logvar)  # (..., E, D)
    if mask is not None:
        prec = prec * mask.unsqueeze(-1).to(prec.dtype)
    total = prec.sum(-2) + (1.0 if prior else 0.0)  # (..., D)
    num = (prec * mu).sum(-2)
    if not prior:
        empty = total <= 0
        total = torch.where(empty, torch.ones_like(total), total)
        num = torch.where(empty, torch.zeros_like(num), num)
    return num / total, -torch.log(total)


def mixture_of_gaussians(mu: Tensor, logvar: Tensor, weights: Tensor, mode: str = "moment") -> tuple[Tensor, Tensor]:
    """One Gaussian ``(B, D)`` for the mixture of ``(B, K, D)`` components with weights ``(B, K)`` (rows sum to 1).

    ``"moment"``: the mixture's mean and variance; ``"param_avg"``: weighted means of the means and of the
    log-variances (not a mixture; the original code's choice).  (``"sample"`` is handled by
    :func:`hime_posterior`; here it is the moment-matched summary.)
    """
    w = weights.unsqueeze(-1)  # (B, K, 1)
    mean = (w * mu).sum(-2)  # (B, D)
    if mode == "param_avg":
        return mean, (w * logvar).sum(-2)
    var = (w * (torch.exp(logvar) + (mu - mean.unsqueeze(-2)).pow(2))).sum(-2)  # = sum w (var + mu^2) - mean^2
    return mean, torch.log(var.clamp_min(torch.finfo(var.dtype).tiny))


@dataclass
class Posterior:
    """The fused posterior of one batch.

    Attributes:
        mu, logvar: ``(B, D)``, the Gaussian z is drawn from (``moment`` / ``param_avg``); in ``sample`` mode
            the mixture's mean and moment-matched variance (a summary; z comes from one group).
        z: ``(B, D)`` the sample (the mean when not sampling).
        kl: ``(B,)`` KL to the prior of the distribution z was drawn from (``sample``: the bound
            ``sum_k w_k KL(q_k || p)``).
        kl_dims: ``(B, D)`` the same per latent dimension (``kl`` is its sum; free bits use it).
        group_mu, group_logvar: ``(B, G, D)`` the per-group products.
        weights: ``(B, G)`` mixture weights.
        component: ``(B,)`` the group drawn per sample (``sample`` mode), else None.
    """

    mu: Tensor
    logvar: Tensor
    z: Tensor
    kl: Tensor
    group_mu: Tensor
    group_logvar: Tensor
    weights: Tensor
    kl_dims: Tensor | None = None
    component: Tensor | None = None


def _reparameterise(mu: Tensor, logvar: Tensor, sample: bool) -> Tensor:
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if sample else mu


def hime_posterior(
    mu: Tensor,
    logvar: Tensor,
    groups: Sequence[Sequence[int]],
    lead_mask: Tensor | None = None,
    *,
    prior: str = "every_group",
    mixture: str = "moment",
    sample: bool = True,
) -> Posterior:
    """HiME fusion of lead posteriors ``(B, L, D)``: PoE inside ``groups`` (lists of lead indices), MoE across.

    See the module docstring for the rules (prior placement, empty groups, mixture modes).
    """
    _choice(prior, PRIORS, "prior placement")
    _choice(mixture, MIXTURES, "mixture")
    b, n_leads, _ = mu.shape
    mask = torch.ones(b, n_leads, dtype=torch.bool, device=mu.device) if lead_mask is None else lead_mask.bool()
    g_mu, g_lv, has = [], [], []
    for g, idx in enumerate(groups):
        idx_t = torch.as_tensor(list(idx), dtype=torch.long, device=mu.device)
        m = mask[:, idx_t]  # (B, n_g)
        with_prior = prior == "every_group" or g == 0
        pm, plv = product_of_experts(mu[:, idx_t], logvar[:, idx_t], m, prior=with_prior)
        g_mu.append(pm)
        g_lv.append(plv)
        has.append(m.any(dim=1))
    group_mu, group_logvar = torch.stack(g_mu, 1), torch.stack(g_lv, 1)  # (B, G, D)
    has_t = torch.stack(has, 1)  # (B, G)
    none = ~has_t.any(dim=1, keepdim=True)  # rows with no lead: every group is the prior
    w = (has_t | none).to(mu.dtype)
    weights = w / w.sum(dim=1, keepdim=True)  # (B, G)
    return mixture_posterior(group_mu, group_logvar, weights, mixture=mixture, sample=sample)


def mixture_posterior(group_mu: Tensor, group_logvar: Tensor, weights: Tensor, *, mixture: str = "moment",
                      sample: bool = True) -> Posterior:
    """The fused :class:`Posterior` of a mixture of Gaussian experts ``(B, K, D)`` with weights ``(B, K)``
    (rows sum to 1), sampled as ``mixture`` says (module docstring): the MoE level of HiME and of MoPoE."""
    _choice(mixture, MIXTURES, "mixture")
    f_mu, f_lv = mixture_of_gaussians(group_mu, group_logvar, weights, "param_avg" if mixture == "param_avg" else "moment")
    if mixture != "sample":
        kl_dims = gaussian_kl_dims(f_mu, f_lv)
        return Posterior(f_mu, f_lv, _reparameterise(f_mu, f_lv, sample), kl_dims.sum(-1),
                         group_mu, group_logvar, weights, kl_dims)
    kl_dims = (weights.unsqueeze(-1) * gaussian_kl_dims(group_mu, group_logvar)).sum(1)  # (B, D): sum_k w_k KL(q_k || p)
    if not sample:
        return Posterior(f_mu, f_lv, f_mu, kl_dims.sum(-1), group_mu, group_logvar, weights, kl_dims)
    component = torch.multinomial(weights.detach().float(), 1).squeeze(1)  # (B,)
    rows = torch.arange(group_mu.shape[0], device=group_mu.device)
    z = _reparameterise(group_mu[rows, component], group_logvar[rows, component], True)
    return Posterior(f_mu, f_lv, z, kl_dims.sum(-1), group_mu, group_logvar, weights, kl_dims, component)


def lead_subsets(n_leads: int) -> Tensor:
    """Membership ``(2**n - 1, n)`` (float 0/1) of every non-empty subset of ``n`` leads (row ``s - 1`` = bits of ``s``)."""
    if not 1 <= n_leads <= 16:
        raise ConfigError(f"MoPoE enumerates every lead subset: 1 to 16 leads, got {n_leads}")
    codes = torch.arange(1, 2**n_leads).unsqueeze(1)  # (S, 1)
    return ((codes >> torch.arange(n_leads)) & 1).to(torch.float32)  # (S, n)


def mopoe_posterior(mu: Tensor, logvar: Tensor, lead_mask: Tensor | None = None, *, mixture: str = "sample",
                    sample: bool = True) -> Posterior:
    """MoPoE (Sutter et al., 2021) of lead posteriors ``(B, L, D)``: an equal-weight mixture over every
    non-empty subset of the present leads of the product of that subset's experts and the prior expert.

    A subset holding an absent lead gets weight 0; with no lead present the posterior is the prior.  The
    ``2**L - 1`` products come from one matrix product of the subset membership with the precisions.
    """
    b, n_leads, _ = mu.shape
    mask = torch.ones(b, n_leads, dtype=torch.bool, device=mu.device) if lead_mask is None else lead_mask.bool()
    member = lead_subsets(n_leads).to(device=mu.device, dtype=mu.dtype)  # (S, L)
    prec = torch.exp(-logvar) * mask.unsqueeze(-1).to(mu.dtype)  # (B, L, D), absent experts out
    total = torch.einsum("sl,bld->bsd", member, prec) + 1.0  # (B, S, D), + the prior expert
    group_mu = torch.einsum("sl,bld->bsd", member, prec * mu) / total
    # a subset counts when every member is present: (member - present) has no positive entry
    full = ((member.unsqueeze(0) - mask.unsqueeze(1).to(mu.dtype)) <= 0).all(-1)  # (B, S)
    none = ~full.any(dim=1, keepdim=True)  # no lead present: every subset is the prior, equal weights
    w = (full | none).to(mu.dtype)
    return mixture_posterior(group_mu, -torch.log(total), w / w.sum(1, keepdim=True), mixture=mixture, sample=sample)


def reference_posterior(mu: Tensor, logvar: Tensor, groups: Sequence[Sequence[int]], *, sample: bool = True
                        ) -> Posterior:
    """The original code's fusion (``reference_compat``): PoE without the prior and with ``eps`` on the
    variances, then equal-weight averages of the group means and log-variances; every lead counts."""
    g_mu, g_lv = [], []
    for idx in groups:
        idx_t = torch.as_tensor(list(idx), dtype=torch.long, device=mu.device)
        prec = 1.0 / (torch.exp(logvar[:, idx_t]) + REFERENCE_EPS)  # (B, n_g, D)
        g_mu.append((mu[:, idx_t] * prec).sum(1) / prec.sum(1))
        g_lv.append(torch.log(1.0 / prec.sum(1) + REFERENCE_EPS))
    group_mu, group_logvar = torch.stack(g_mu, 1), torch.stack(g_lv, 1)  # (B, G, D)
    weights = torch.full(group_mu.shape[:2], 1.0 / len(groups), dtype=mu.dtype, device=mu.device)
    f_mu, f_lv = group_mu.mean(1), group_logvar.mean(1)
    # the KL the original optimises is on the averaged *encoder* parameters (see LSEMVAE.loss), not this one
    kl_dims = gaussian_kl_dims(f_mu, f_lv)
    return Posterior(f_mu, f_lv, _reparameterise(f_mu, f_lv, sample), kl_dims.sum(-1),
                     group_mu, group_logvar, weights, kl_dims)


def alignment_loss(mu: Tensor, target: Tensor, lead_mask: Tensor | None = None) -> Tensor:
    """Mean over present ``(sample, lead)`` pairs of the mean squared difference ``mu (B, L, D)`` - ``target (B, D)``."""
    per = (mu - target.unsqueeze(1)).pow(2).mean(-1)  # (B, L)
    if lead_mask is None:
        return per.mean()
    m = lead_mask.to(per.dtype)
    return (per * m).sum() / m.sum().clamp_min(1.0)


def beta_schedule(epoch: int, anneal_epochs: int, beta_max: float = 1.0) -> float:
    """KL weight at 0-based ``epoch``: ``beta_max * min((epoch + 1) / anneal_epochs, 1)`` (``beta_max``
    throughout if ``anneal_epochs <= 0``).

    The original code's ``min(epoch / 50, 1)`` with epochs counted from 1: 1/50 in the first epoch, 1 from
    the 50th on (``beta_max`` 1; a beta-VAE takes ``beta_max > 1``).
    """
    if anneal_epochs <= 0:
        return float(beta_max)
    return float(beta_max) * min((int(epoch) + 1) / int(anneal_epochs), 1.0)


def kl_term(kl_dims: Tensor, free_bits: float = 0.0) -> Tensor:
    """The KL term of the loss from per-dimension KLs ``(B, D)``: their batch mean summed over dimensions;
    with ``free_bits`` > 0 each dimension's batch mean is floored at ``free_bits`` nats (Kingma et al. 2016,
    "free bits"), so the optimiser gains nothing by pushing a dimension's KL below it (against posterior
    collapse).  ``free_bits`` 0 is the plain KL (the paper)."""
    per_dim = kl_dims.mean(0)  # (D,)
    if free_bits > 0:
        per_dim = per_dim.clamp_min(float(free_bits))
    return per_dim.sum()


# --------------------------------------------------------------------------------------------------
# The VAE
# --------------------------------------------------------------------------------------------------
@dataclass
class LSVAEConfig:
    """Everything that defines an LS-EMVAE (saved with a pretraining run).

    Attributes:
        leads: the leads the model has encoders (and decoders) for; input rows are in this order.
        arch: ``"paper"`` | ``"small"`` | ``"tiny"`` (:data:`ARCHS`); ``channels``, ``latent_dim``,
            ``pool_length`` override it when not None (``pool_length`` 0 = flatten, the paper's design).
        n_samples: samples per lead (decoder output length; the flatten design's input length).
        kernel_size: encoder convolution width.
        decoder: ``"per_lead"`` (one decoder per lead) or ``"conditioned"`` (one decoder seeing a learned
            lead embedding of ``lead_embedding_dim``).
        groups: lead groups for the PoE level (names; leads the model lacks are ignored, every model lead
            must be in exactly one group).
        prior: ``"every_group"`` (prior expert in every group's product) or ``"first_group"``.
        mixture: ``"moment"`` | ``"param_avg"`` | ``"sample"`` (module docstring).
        align_target: ``"lead_mean"`` or ``"fused"``; ``align_weight`` its weight (0.1).
        recon_scale: factor on the summed squared reconstruction error (1e-3).
        beta_anneal_epochs: KL weight rises linearly to ``beta_max`` over this many epochs (:func:`beta_schedule`).
        beta_max: the KL weight after annealing (1: the paper; > 1: a beta-VAE).
        free_bits: nats per latent dimension below which the KL term stops pulling (:func:`kl_term`); 0 (the
            paper's plain KL) by default.
        fusion: ``"hime"`` (the paper: PoE in ``groups``, MoE across), ``"mopoe"`` (baseline: mixture over
            every subset of the present leads of their PoE with the prior; ``groups`` and ``prior`` unused) or
            ``"single"`` (baseline: one encoder over all leads as channels -> one Gaussian, one decoder of all
            leads; no lead posteriors, so no alignment term; with ``beta_max > 1`` the single-encoder beta-VAE).
        reference_compat: reproduce the original code's behaviour (module docstring).
    """

    leads: tuple[str, ...] = field(default_factory=lambda: tuple(CANONICAL_LEADS))
    arch: str = "paper"
    n_samples: int = 5000
    channels: tuple[int, ...] | None = None
    latent_dim: int | None = None
    pool_length: int | None = None
    kernel_size: int = 3
    decoder: str = "per_lead"
    lead_embedding_dim: int = 16
    groups: tuple[tuple[str, ...], ...] = DEFAULT_GROUPS
    prior: str = "every_group"
    mixture: str = "moment"
    align_target: str = "lead_mean"
    align_weight: float = 0.1
    recon_scale: float = 1e-3
    beta_anneal_epochs: int = 50
    beta_max: float = 1.0
    free_bits: float = 0.0
    fusion: str = "hime"
    reference_compat: bool = False

    def __post_init__(self) -> None:
        self.leads = _check_leads(self.leads)
        self.groups = tuple(_check_leads(g, "LS-EMVAE lead groups") for g in self.groups)
        if self.channels is not None:
            self.channels = tuple(int(c) for c in self.channels)
        seen = [lead for g in self.groups for lead in g]
        if len(seen) != len(set(seen)):
            raise ConfigError(f"a lead is in two LS-EMVAE groups: {self.groups}")
        lost = [lead for lead in self.leads if lead not in seen]
        if lost:
            raise ConfigError(f"lead(s) {', '.join(lost)} in no LS-EMVAE group {self.groups}")
        _choice(self.decoder, DECODERS, "LS-EMVAE decoder")
        _choice(self.prior, PRIORS, "prior placement")
        _choice(self.mixture, MIXTURES, "mixture")
        _choice(self.align_target, ALIGN_TARGETS, "alignment target")
        _choice(self.fusion, FUSIONS, "LS-EMVAE fusion")
        if self.reference_compat and self.fusion != "hime":
            raise ConfigError(f"reference_compat reproduces the original HiME code; fusion must be hime, not {self.fusion}")
        if self.reference_compat and self.free_bits:
            raise ConfigError("reference_compat reproduces the original code's plain KL: free_bits must be 0")
        if self.fusion == "mopoe" and self.prior != "every_group":
            raise ConfigError("MoPoE puts the prior expert into every subset's product: prior must be every_group")
        if not (float(self.beta_max) > 0 and float(self.free_bits) >= 0):
            raise ConfigError(f"beta_max must be > 0 and free_bits >= 0; got {self.beta_max}, {self.free_bits}")
        if self.n_samples < 8 or self.kernel_size < 1:
            raise ConfigError(f"bad LS-EMVAE n_samples / kernel_size: {self.n_samples} / {self.kernel_size}")
        self.architecture()  # validates

    def architecture(self) -> dict[str, Any]:
        """``{"channels", "latent_dim", "pool_length"}`` after overrides."""
        return resolve_arch(self.arch, channels=self.channels, latent_dim=self.latent_dim, pool_length=self.pool_length)

    def group_indices(self) -> list[list[int]]:
        """Groups as row indices into ``leads`` (groups with none of the model's leads dropped)."""
        out = [[self.leads.index(lead) for lead in g if lead in self.leads] for g in self.groups]
        return [g for g in out if g]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["leads"] = list(self.leads)
        d["groups"] = [list(g) for g in self.groups]
        d["channels"] = None if self.channels is None else list(self.channels)
        return d

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> LSVAEConfig:
        reject_unknown_fields(cls, values, "LS-EMVAE")
        values = dict(values)
        if "groups" in values:
            values["groups"] = tuple(tuple(g) for g in values["groups"])
        return cls(**values)


@dataclass
class LSVAEOutput:
    """What :meth:`LSEMVAE.forward` returns: lead posteriors ``mu``/``logvar`` ``(B, L, D)``, the fused
    :class:`Posterior`, reconstructions ``recon`` ``(B, L, T)`` and the lead mask used ``(B, L)``."""

    mu: Tensor
    logvar: Tensor
    posterior: Posterior
    recon: Tensor
    lead_mask: Tensor


class LSEMVAE(nn.Module):
    """LS-EMVAE: per-lead encoders, HiME posterior, per-lead (or conditioned) decoders.

    Args:
        config: an :class:`LSVAEConfig` (keyword overrides build one when omitted or update it).

    Attributes:
        encoders: ``ModuleDict`` lead name -> :class:`LeadEncoder`.
        decoders: ``ModuleDict`` lead name -> :class:`LeadDecoder` (``decoder="per_lead"``), else
            ``decoder`` (one :class:`LeadDecoder`) and, for ``"conditioned"``, ``lead_embedding``
            (one row per canonical lead, so subsets share parameters).
    """

    def __init__(self, config: LSVAEConfig | None = None, **overrides: Any):
        super().__init__()
        if config is None:
            config = LSVAEConfig(**overrides)
        elif overrides:
            config = LSVAEConfig.from_dict({**config.to_dict(), **overrides})
        self.config = config
        arch = config.architecture()
        ch, d = arch["channels"], int(arch["latent_dim"])
        self.leads = config.leads
        self.latent_dim = d
        self.encoders: nn.ModuleDict | None = None
        self.encoder: LeadEncoder | None = None
        self.decoders: nn.ModuleDict | None = None
        self.decoder: LeadDecoder | None = None
        self.lead_embedding: nn.Embedding | None = None
        if config.fusion == "single":
            self.encoder = LeadEncoder(ch, config.kernel_size, d, config.n_samples, arch["pool_length"],
                                       in_channels=len(self.leads))
            self.decoder = LeadDecoder(ch, d, config.n_samples, out_channels=len(self.leads))
            # the input channels' leads, saved with the weights so a fine-tuning face takes its leads' by name
            self.register_buffer("input_leads", torch.tensor([CANONICAL_LEADS.index(lead) for lead in self.leads]))
        else:
            self.encoders = nn.ModuleDict({
                lead: LeadEncoder(ch, config.kernel_size, d, config.n_samples, arch["pool_length"])
                for lead in self.leads
            })
        if config.fusion == "single":
            pass  # built above
        elif config.reference_compat:
            self.decoder = LeadDecoder(ch, d, config.n_samples)
        elif config.decoder == "per_lead":
            self.decoders = nn.ModuleDict({lead: LeadDecoder(ch, d, config.n_samples) for lead in self.leads})
        else:
            e = int(config.lead_embedding_dim)
            self.lead_embedding = nn.Embedding(len(CANONICAL_LEADS), e)
            nn.init.normal_(self.lead_embedding.weight, std=1.0)
            self.decoder = LeadDecoder(ch, d, config.n_samples, cond_dim=e)
        self.register_buffer(
            "lead_index", torch.tensor([CANONICAL_LEADS.index(lead) for lead in self.leads]), persistent=False
        )
        self.groups = config.group_indices()

    def _check(self, x: Tensor, lead_mask: Tensor | None) -> Tensor:
        if x.dim() != 3 or x.shape[1] != len(self.leads):
            raise ConfigError(f"ECG input must be (B, {len(self.leads)}, T) for leads {self.leads}; got {tuple(x.shape)}")
        if lead_mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if lead_mask.shape != x.shape[:2]:
            raise ConfigError(f"lead_mask must be (B, L) = {tuple(x.shape[:2])}; got {tuple(lead_mask.shape)}")
        return lead_mask.bool()

    def encode(self, x: Tensor, lead_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Lead posteriors ``(mu, logvar)``, each ``(B, L, D)``; absent rows are zeroed before encoding
        (``fusion="single"``: the one posterior of all leads, ``(B, 1, D)``)."""
        mask = self._check(x, lead_mask)
        x = torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x))
        if self.encoder is not None:
            mu, logvar = self.encoder(x)
            return mu.unsqueeze(1), logvar.unsqueeze(1)
        out = [self.encoders[lead](x[:, i : i + 1]) for i, lead in enumerate(self.leads)]
        return torch.stack([m for m, _ in out], 1), torch.stack([lv for _, lv in out], 1)  # (B, L, D)

    def decode(self, z: Tensor) -> Tensor:
        """Reconstructions ``(B, L, T)`` of every lead from ``z`` ``(B, D)``."""
        if self.decoders is not None:
            return torch.stack([self.decoders[lead](z) for lead in self.leads], 1)
        if self.encoder is not None:  # single encoder: one decoder with a channel per lead
            return self.decoder(z)
        if self.lead_embedding is None:  # reference_compat: one unconditioned decoder, the same output per lead
            return self.decoder(z).unsqueeze(1).expand(-1, len(self.leads), -1)
        b, n = z.shape[0], len(self.leads)
        emb = self.lead_embedding(self.lead_index)  # (L, e)
        zz = torch.cat([z.unsqueeze(1).expand(-1, n, -1), emb.unsqueeze(0).expand(b, -1, -1)], -1)  # (B, L, D + e)
        return self.decoder(zz.reshape(b * n, -1)).view(b, n, -1)

    def forward(self, x: Tensor, lead_mask: Tensor | None = None, *, sample: bool = True) -> LSVAEOutput:
        """Encode ``x`` ``(B, L, T)``, fuse, draw z (its mean if ``sample`` is False), decode every lead."""
        mask = self._check(x, lead_mask)
        mu, logvar = self.encode(x, mask)
        dtype = torch.promote_types(mu.dtype, torch.float32)  # the Gaussian algebra in fp32 under fp16 / bf16
        mu, logvar = mu.to(dtype), logvar.to(dtype)
        cfg = self.config
        if cfg.reference_compat:
            post = reference_posterior(mu, logvar, self.groups, sample=sample)
        elif cfg.fusion == "single":
            m, lv = mu[:, 0], logvar[:, 0]
            kl_dims = gaussian_kl_dims(m, lv)
            post = Posterior(m, lv, _reparameterise(m, lv, sample), kl_dims.sum(-1), mu, logvar,
                             torch.ones(mu.shape[:2], dtype=dtype, device=mu.device), kl_dims)
        elif cfg.fusion == "mopoe":
            post = mopoe_posterior(mu, logvar, mask, mixture=cfg.mixture, sample=sample)
        else:
            post = hime_posterior(mu, logvar, self.groups, mask, prior=cfg.prior, mixture=cfg.mixture, sample=sample)
        return LSVAEOutput(mu, logvar, post, self.decode(post.z), mask)

    def loss(self, output: LSVAEOutput, x: Tensor, *, beta: float = 1.0) -> dict[str, Tensor]:
        """Named loss terms: ``loss`` (total), ``recon``, ``kl``, ``align`` (each per sample, see the module doc)."""
        cfg = self.config
        b = x.shape[0]
        dtype = torch.promote_types(output.recon.dtype, torch.float32)
        sq = (output.recon.to(dtype) - x.to(dtype)).pow(2).sum(-1)  # (B, L)
        mu, logvar = output.mu.to(dtype), output.logvar.to(dtype)
        if cfg.reference_compat:
            recon = sq.sum() * cfg.recon_scale / b
            joint_mu, joint_lv = mu.mean(1), logvar.mean(1)  # (B, D) averaged encoder parameters
            kl = gaussian_kl(joint_mu, joint_lv).sum() / b
            align = alignment_loss(mu, joint_mu)
        else:
            m = output.lead_mask
            recon = (sq * m.to(dtype)).sum() * cfg.recon_scale / b
            kl = output.posterior.kl.to(dtype).mean()
            if cfg.fusion == "single":  # one posterior: nothing to align
                target = None
            elif cfg.align_target == "fused":
                target = output.posterior.mu.to(dtype)
            else:
                w = m.to(dtype).unsqueeze(-1)
                target = (mu * w).sum(1) / w.sum(1).clamp_min(1.0)
            align = alignment_loss(mu, target, m) if target is not None else kl.new_zeros(())
        if cfg.free_bits > 0:  # the plain KL is still the logged ``kl``; the loss uses the floored one
            total = recon + beta * kl_term(output.posterior.kl_dims.to(dtype), cfg.free_bits) + cfg.align_weight * align
        else:
            total = recon + beta * kl + cfg.align_weight * align
        return {"loss": total, "recon": recon, "kl": kl, "align": align,
                "beta": torch.as_tensor(float(beta), dtype=dtype, device=x.device)}


def build_lsvae(arch: str = "paper", **overrides: Any) -> LSEMVAE:
    """An :class:`LSEMVAE` of the named architecture (:data:`ARCHS`), any :class:`LSVAEConfig` field overridable."""
    return LSEMVAE(LSVAEConfig(arch=arch, **overrides))


# --------------------------------------------------------------------------------------------------
# Fine-tuning face: a registered ECG encoder
# --------------------------------------------------------------------------------------------------
_ENCODER_KEY = re.compile(r"(?:^|\.)encoders\.([A-Za-z0-9]+)\.(.+)$")


class LSVAEECGEncoder(nn.Module):
    """Pretrained LS-EMVAE lead encoders as an ECG encoder: ``(B, L, T)`` -> concatenated posterior means.

    Args:
        leads: lead names of the input rows (any subset of the canonical 12); each gets the encoder of
            that name.
        arch, channels, latent_dim, pool_length, kernel_size, n_samples: the encoder design (as
            :class:`LSVAEConfig`; must match the VAE whose weights are loaded).
        head_hidden: 0 -> features are the means ``(B, L * latent_dim)``; > 0 -> the paper head's hidden
            layer is applied (Linear ``head_hidden`` -> ReLU -> Dropout ``dropout``), so a linear fusion head
            on top completes :class:`LSVAEHead`.
        frozen: encoders not trained (no gradients, kept in eval mode); the projection still is.
        pretrained: a weights file of an :class:`LSEMVAE` (or anything with ``encoders.<lead>.`` keys) to load.

    Attributes:
        out_dim: feature width.
        gradcam_layer: identity over the stacked convolution maps, activations ``(B * L, C, T')``
            (row ``b * L + l`` is lead ``l`` of sample ``b``).
    """

    def __init__(
        self,
        leads: Sequence[str] = CANONICAL_LEADS,
        *,
        arch: str = "small",
        channels: Sequence[int] | None = None,
        latent_dim: int | None = None,
        pool_length: int | None = None,
        kernel_size: int = 3,
        n_samples: int = 5000,
        head_hidden: int = 0,
        dropout: float = 0.5,
        frozen: bool = False,
        pretrained: str | None = None,
    ):
        super().__init__()
        self.leads = _check_leads(leads)
        a = resolve_arch(arch, channels=channels, latent_dim=latent_dim, pool_length=pool_length)
        self.latent_dim = int(a["latent_dim"])
        self.encoders = nn.ModuleDict({
            name: LeadEncoder(a["channels"], kernel_size, self.latent_dim, n_samples, a["pool_length"],
                              with_logvar=False, in_channels=n_in)
            for name, n_in in self._encoder_inputs().items()
        })
        self.lead_maps = nn.Identity()  # Grad-CAM hook point
        means = len(self.encoders) * self.latent_dim
        self.project = (nn.Sequential(nn.Linear(means, head_hidden), nn.ReLU(), nn.Dropout(dropout))
                        if head_hidden else None)
        self.out_dim = int(head_hidden) if head_hidden else means
        self.frozen = bool(frozen)
        if pretrained:
            from .weights import read_state_dict

            self.load_vae_weights(read_state_dict(pretrained))
        if self.frozen:
            self.encoders.requires_grad_(False)
            self.encoders.eval()

    def _encoder_inputs(self) -> dict[str, int]:
        """Encoder name -> its input channels: one single-channel encoder per lead."""
        return {lead: 1 for lead in self.leads}

    def train(self, mode: bool = True) -> LSVAEECGEncoder:
        super().train(mode)
        if self.frozen:
            self.encoders.eval()
        return self

    @property
    def gradcam_layer(self) -> nn.Module:
        """Identity over the convolution maps of every lead, ``(B * L, C, T')``."""
        return self.lead_maps

    def load_vae_weights(self, source: LSEMVAE | Mapping[str, Tensor]) -> list[str]:
        """Load this encoder's leads from a VAE (or its state dict) by lead name; log-variance layers are
        dropped.  Returns the leads loaded; :class:`ConfigError` if the source lacks one or shapes differ."""
        state = source.state_dict() if isinstance(source, nn.Module) else source
        by_lead: dict[str, dict[str, Tensor]] = {}
        for key, value in state.items():
            hit = _ENCODER_KEY.search(key)
            if hit and not hit.group(2).startswith("fc_logvar."):
                by_lead.setdefault(hit.group(1), {})[hit.group(2)] = value
        missing = [lead for lead in self.leads if lead not in by_lead]
        if missing:
            raise ConfigError(f"the pretrained LS-EMVAE has no encoder for lead(s) {', '.join(missing)} "
                              f"(has {', '.join(sorted(by_lead)) or 'none'})")
        for lead in self.leads:
            try:
                self.encoders[lead].load_state_dict(by_lead[lead], strict=True)
            except RuntimeError as e:
                raise ConfigError(f"pretrained LS-EMVAE encoder for lead {lead} does not fit: "
                                  f"{' '.join(str(e).split())[:300]}") from None
        return list(self.leads)

    @classmethod
    def from_vae(cls, vae: LSEMVAE, leads: Sequence[str] = CANONICAL_LEADS[:6], **kw: Any) -> LSVAEECGEncoder:
        """The face of ``vae`` for ``leads`` (default the six limb leads), same architecture, weights loaded."""
        cfg = vae.config
        a = cfg.architecture()
        enc = cls(leads, arch=cfg.arch, channels=a["channels"], latent_dim=a["latent_dim"],
                  pool_length=a["pool_length"], kernel_size=cfg.kernel_size, n_samples=cfg.n_samples, **kw)
        enc.load_vae_weights(vae)
        return enc

    def _masked_input(self, x: Tensor, lead_mask: Tensor | None) -> Tensor:
        """``x`` ``(B, L, T)`` checked against this encoder's leads, absent leads' rows zeroed."""
        if x.dim() != 3 or x.shape[1] != len(self.leads):
            raise ConfigError(f"ECG input must be (B, {len(self.leads)}, T) for leads {self.leads}; got {tuple(x.shape)}")
        if lead_mask is not None:
            x = torch.where(lead_mask.bool().unsqueeze(-1), x, torch.zeros_like(x))
        return x

    def lead_means(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Posterior means ``(B, L, D)``; absent leads (``lead_mask`` False) give zeros whatever their rows hold."""
        x = self._masked_input(x, lead_mask)
        maps = torch.stack([self.encoders[lead].features(x[:, i : i + 1]) for i, lead in enumerate(self.leads)], 1)
        b, n, c, t = maps.shape  # (B, L, C, T')
        maps = maps.reshape(b * n, c, t)  # (B * L, C, T')
        if self.frozen and not self.training and torch.is_grad_enabled():
            maps = maps.detach().requires_grad_()  # frozen encoders: Grad-CAM still gets gradients at the maps
        maps = self.lead_maps(maps).view(b, n, c, t)
        mu = torch.stack([self.encoders[lead].head(maps[:, i])[0] for i, lead in enumerate(self.leads)], 1)
        if lead_mask is not None:
            mu = mu * lead_mask.to(mu.dtype).unsqueeze(-1)
        return mu  # (B, L, D)

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Feature ``(B, out_dim)`` from ``x`` ``(B, L, T)``: concatenated lead means (then the projection)."""
        feat = self.lead_means(x, lead_mask).flatten(1)  # (B, L * D)
        return feat if self.project is None else self.project(feat)


class SingleVAEECGEncoder(LSVAEECGEncoder):
    """The single-encoder (beta-)VAE baseline's encoder as an ECG encoder: ``(B, L, T)`` -> its posterior mean
    ``(B, latent_dim)`` (optionally through the paper head's hidden layer, as :class:`LSVAEECGEncoder`).

    One :class:`LeadEncoder` takes the leads as input channels.  Weights come from an :class:`LSEMVAE` with
    ``fusion="single"`` by lead name: its first convolution keeps the input columns of this encoder's leads
    (the VAE saves its input leads as ``input_leads``), which is exactly the VAE's encoder with the other
    leads absent (zero), the way the VAE sees a record lacking them.  ``gradcam_layer`` activations are the
    first convolution's per-lead parts ``(B * L, C, T')`` (see :meth:`lead_means`).
    """

    def _encoder_inputs(self) -> dict[str, int]:
        return {"all": len(self.leads)}

    def load_vae_weights(self, source: LSEMVAE | Mapping[str, Tensor]) -> list[str]:
        """Load from a single-encoder VAE (or its state dict), keeping the first convolution's columns of this
        encoder's leads; :class:`ConfigError` if the source is not one, lacks a lead or shapes differ."""
        state = source.state_dict() if isinstance(source, nn.Module) else source
        if "input_leads" not in state or not any(k.startswith("encoder.") for k in state):
            raise ConfigError("the pretrained VAE is not a single-encoder VAE (fusion: single): no 'encoder.' weights "
                              "and 'input_leads'")
        have = [CANONICAL_LEADS[int(i)] for i in state["input_leads"].tolist()]
        missing = [lead for lead in self.leads if lead not in have]
        if missing:
            raise ConfigError(f"the pretrained single-encoder VAE has no input for lead(s) {', '.join(missing)} "
                              f"(has {', '.join(have)})")
        cols = torch.as_tensor([have.index(lead) for lead in self.leads])
        own: dict[str, Tensor] = {}
        for key, value in state.items():
            if key.startswith("encoder.") and not key.startswith("encoder.fc_logvar."):
                name = key[len("encoder."):]
                own[name] = value[:, cols] if name == "conv.0.weight" else value
        try:
            self.encoders["all"].load_state_dict(own, strict=True)
        except RuntimeError as e:
            raise ConfigError(f"pretrained single-encoder VAE does not fit: {' '.join(str(e).split())[:300]}") from None
        return list(self.leads)

    def lead_means(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """The posterior mean ``(B, 1, D)`` of all leads together (absent leads zeroed).

        The first convolution is linear in its input channels, so it is computed as the sum of one grouped
        convolution per lead (exactly the same result); those per-lead maps ``(B * L, C, T')`` are the
        ``gradcam_layer`` activations, which gives per-lead Grad-CAM like every other ECG encoder.
        """
        x = self._masked_input(x, lead_mask)
        enc = self.encoders["all"]
        first: nn.Conv1d = enc.conv[0]
        b, n = x.shape[:2]
        c = first.out_channels
        w = first.weight.transpose(0, 1).reshape(n * c, 1, -1)  # (L * C, 1, k), lead-major
        per = nn.functional.conv1d(x, w, stride=first.stride, padding=first.padding, groups=n)  # (B, L * C, T')
        per = per.reshape(b * n, c, -1)  # (B * L, C, T')
        if self.frozen and not self.training and torch.is_grad_enabled():
            per = per.detach().requires_grad_()
        per = self.lead_maps(per).view(b, n, c, -1)
        h = per.sum(1) + first.bias.view(1, -1, 1)  # = first(x)
        maps = enc.conv[1:](h)  # (B, C', T'')
        return enc.head(maps)[0].unsqueeze(1)  # (B, 1, D)


@register_ecg_encoder("lsvae")
def lsvae(leads: Sequence[str] = CANONICAL_LEADS, **kw: Any) -> LSVAEECGEncoder:
    """lsvae: LS-EMVAE lead encoders as an ECG encoder (default ``arch="small"``; ``arch="paper"`` for the
    published size, which takes exactly ``n_samples`` = 5,000 samples per lead)."""
    return LSVAEECGEncoder(leads, **kw)


@register_ecg_encoder("lsvae_tiny")
def lsvae_tiny(leads: Sequence[str] = CANONICAL_LEADS, **kw: Any) -> LSVAEECGEncoder:
    """lsvae_tiny: the tiny LS-EMVAE encoders (tests)."""
    return LSVAEECGEncoder(leads, **{"arch": "tiny", **kw})


@register_ecg_encoder("betavae")
def betavae(leads: Sequence[str] = CANONICAL_LEADS, **kw: Any) -> SingleVAEECGEncoder:
    """betavae: the single-encoder (beta-)VAE baseline's encoder (one encoder over all leads as channels;
    default ``arch="small"``), weights taken by lead name from an LS-EMVAE built with ``fusion="single"``."""
    return SingleVAEECGEncoder(leads, **kw)
