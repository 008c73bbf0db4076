"""Stage 4 of paper 003: an ECG-conditioned image diffusion model (ECG -> chest X-ray) with classifier-free
guidance, on ``diffusers`` (optional extra ``generate``: ``pip install cardiofusion[generate]``).

The network is a :class:`diffusers.UNet2DModel`; the condition (an aligned ECG embedding, ``(B, cond_dim)``)
is projected to the UNet's time-embedding width and added to it (``class_embed_type="identity"``).  During
training the condition is replaced by a learned *null* embedding with probability ``cond_dropout`` (so the
unconditional model that classifier-free guidance needs is trained -- the public code sampled with guidance
while dropout was off).  Sampling uses a :class:`diffusers.DDIMScheduler` (or DDPM), never a hand-written
sampler: ``eps = eps_uncond + s * (eps_cond - eps_uncond)``; guidance 1 is the conditional model itself
(computed without the unconditional pass), guidance 0 the unconditional one.  Images are in ``[-1, 1]``
inside the model and returned in ``[0, 1]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = ["ECGToImageDiffusion"]


def _diffusers():
    try:
        import diffusers
    except ImportError:  # pragma: no cover - optional extra
        raise ConfigError("ECG -> image generation needs diffusers: pip install 'cardiofusion[generate]'") from None
    return diffusers


class ECGToImageDiffusion(nn.Module):
    """Conditional DDPM / DDIM image generator.

    Args:
        cond_dim: width of the condition (the aligned ECG embedding).
        image_size: side of the square single-channel images.
        block_out_channels: UNet widths per resolution (one down / up block each).
        layers_per_block: ResNet layers per block.
        num_train_timesteps: diffusion steps of training.
        cond_dropout: probability that a training row's condition is replaced by the null embedding.
        beta_schedule: the schedulers' noise schedule (``squaredcos_cap_v2``, ``linear``...).
    """

    def __init__(self, cond_dim: int, image_size: int = 64, block_out_channels: Sequence[int] = (32, 64, 64),
                 layers_per_block: int = 1, num_train_timesteps: int = 1000, cond_dropout: float = 0.1,
                 beta_schedule: str = "squaredcos_cap_v2"):
        super().__init__()
        if not 0.0 <= float(cond_dropout) < 1.0:
            raise ConfigError(f"cond_dropout must be in [0, 1), got {cond_dropout}")
        d = _diffusers()
        widths = tuple(int(w) for w in block_out_channels)
        self.image_size, self.cond_dim = int(image_size), int(cond_dim)
        self.cond_dropout, self.num_train_timesteps = float(cond_dropout), int(num_train_timesteps)
        self.beta_schedule = str(beta_schedule)
        self.unet = d.UNet2DModel(
            sample_size=self.image_size, in_channels=1, out_channels=1, block_out_channels=widths,
            layers_per_block=int(layers_per_block), down_block_types=("DownBlock2D",) * len(widths),
            up_block_types=("UpBlock2D",) * len(widths), class_embed_type="identity",
            norm_num_groups=min(8, widths[0]),
        )
        time_dim = widths[0] * 4
        self.cond_proj = nn.Sequential(nn.Linear(self.cond_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.null_cond = nn.Parameter(torch.zeros(time_dim))
        self.train_scheduler = d.DDPMScheduler(num_train_timesteps=self.num_train_timesteps,
                                               beta_schedule=self.beta_schedule)

    # -- conditioning ---------------------------------------------------------------------------------
    def embed_condition(self, cond: Tensor | None, drop: Tensor | None = None) -> Tensor:
        """``(B, time_dim)``: the projected condition, the null embedding where ``drop`` (or ``cond`` is None)."""
        if cond is None:
            raise ConfigError("embed_condition needs the condition to know the batch size; use drop=all True")
        emb = self.cond_proj(cond.float())
        if drop is not None:
            emb = torch.where(drop.view(-1, 1), self.null_cond.to(emb.dtype).expand_as(emb), emb)
        return emb

    def predict_noise(self, noisy: Tensor, t: Tensor, cond: Tensor, *, unconditional: bool = False) -> Tensor:
        drop = torch.full((cond.shape[0],), bool(unconditional), dtype=torch.bool, device=cond.device)
        return self.unet(noisy, t, class_labels=self.embed_condition(cond, drop)).sample

    # -- training -------------------------------------------------------------------------------------
    def loss(self, images: Tensor, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noise-prediction MSE on ``images`` ``(B, 1, H, W)`` in ``[0, 1]``; conditions dropped at
        ``cond_dropout`` (only in training mode)."""
        x0 = images.float() * 2.0 - 1.0
        b = x0.shape[0]
        dev = x0.device
        noise = torch.randn(x0.shape, generator=generator, device=dev)
        t = torch.randint(0, self.num_train_timesteps, (b,), generator=generator, device=dev)
        noisy = self.train_scheduler.add_noise(x0, noise, t)
        drop = (torch.rand(b, generator=generator, device=dev) < self.cond_dropout) if self.training else \
            torch.zeros(b, dtype=torch.bool, device=dev)
        pred = self.unet(noisy, t, class_labels=self.embed_condition(cond, drop)).sample
        return torch.mean((pred - noise) ** 2)

    # -- sampling -------------------------------------------------------------------------------------
    def guided_noise(self, x: Tensor, t: Tensor, cond_emb: Tensor, null_emb: Tensor, guidance: float, *,
                     shortcut: bool = True) -> Tensor:
        """Classifier-free guided noise ``eps_u + s (eps_c - eps_u)`` (one batched UNet pass for both); with
        ``shortcut`` guidance 1 / 0 run only the conditional / unconditional pass (the same value)."""
        if shortcut and guidance == 1.0:
            return self.unet(x, t, class_labels=cond_emb).sample
        if shortcut and guidance == 0.0:
            return self.unet(x, t, class_labels=null_emb).sample
        b = x.shape[0]
        both = self.unet(torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([cond_emb, null_emb])).sample
        eps_c, eps_u = both[:b], both[b:]
        return eps_u + float(guidance) * (eps_c - eps_u)

    @torch.no_grad()
    def generate(self, cond: Tensor, *, guidance: float = 3.0, steps: int = 50, seed: int | None = 0,
                 scheduler: str = "ddim", eta: float = 0.0) -> Tensor:
        """Images ``(B, 1, S, S)`` in ``[0, 1]`` for conditions ``(B, cond_dim)``.

        Args:
            guidance: classifier-free guidance scale (1: the conditional model, 0: the unconditional one).
            steps: sampling steps.
            seed: seed of the initial noise and of stochastic steps (same seed, same images).
            scheduler: ``ddim`` or ``ddpm``.
            eta: DDIM stochasticity (0: deterministic given the initial noise).
        """
        d = _diffusers()
        if scheduler == "ddim":
            sched = d.DDIMScheduler(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                                    clip_sample=True)
        elif scheduler == "ddpm":
            sched = d.DDPMScheduler(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                                    clip_sample=True)
        else:
            raise ConfigError(f"scheduler must be 'ddim' or 'ddpm', got {scheduler!r}")
        sched.set_timesteps(int(steps))
        dev = cond.device
        gen = torch.Generator(device=dev).manual_seed(int(seed)) if seed is not None else None
        x = torch.randn((cond.shape[0], 1, self.image_size, self.image_size), generator=gen, device=dev)
        x = x * sched.init_noise_sigma
        b = cond.shape[0]
        cond_emb = self.embed_condition(cond, torch.zeros(b, dtype=torch.bool, device=dev))
        null_emb = self.null_cond.to(cond_emb.dtype).expand_as(cond_emb)
        for t in sched.timesteps:
            tt = torch.full((b,), int(t), device=dev, dtype=torch.long)
            eps = self.guided_noise(x, tt, cond_emb, null_emb, guidance)
            kw = {"eta": float(eta)} if scheduler == "ddim" else {}
            x = sched.step(eps, t, x, generator=gen, **kw).prev_sample
        return ((x.clamp(-1.0, 1.0) + 1.0) / 2.0).float()


#: Keys of a generator spec (:func:`build_generator`): the ECG side of the alignment and the diffusion model.
GENERATOR_SPEC_KEYS = ("ecg_encoder", "ecg_kwargs", "leads", "embed_dim", "projection_hidden", "image_size",
                       "block_out_channels", "layers_per_block", "num_train_timesteps", "cond_dropout")


class ECGImageGenerator(nn.Module):
    """The whole ECG -> image generator of stage 4 without its training machinery: the aligned ECG encoder
    and projection (the condition, L2-normalised) and the :class:`ECGToImageDiffusion`.  Its state dict has
    the keys of :class:`~cardiofusion.training.ecg_generate.GenerationModule`'s (``ecg_encoder.*``,
    ``ecg_projection.*``, ``diffusion.*``), so a bundle stores it as plain tensors.

    Args:
        spec: :data:`GENERATOR_SPEC_KEYS` (JSON-friendly; :meth:`GenerationModule.generator_spec`), optionally
            ``projection_norm``.
    """

    def __init__(self, spec: dict):
        super().__init__()
        from .alignment import ProjectionHead
        from .model import create_ecg_encoder

        missing = [k for k in GENERATOR_SPEC_KEYS if k not in spec]
        if missing:
            raise ConfigError(f"generator spec lacks {', '.join(missing)}")
        self.spec = {k: spec[k] for k in GENERATOR_SPEC_KEYS}
        self.spec["projection_norm"] = bool(spec.get("projection_norm", False))
        self.ecg_encoder = create_ecg_encoder(spec["ecg_encoder"], leads=tuple(spec["leads"]), **spec["ecg_kwargs"])
        self.ecg_projection = ProjectionHead(int(self.ecg_encoder.out_dim), int(spec["embed_dim"]),
                                             spec["projection_hidden"], self.spec["projection_norm"])
        self.diffusion = ECGToImageDiffusion(int(spec["embed_dim"]), int(spec["image_size"]),
                                             spec["block_out_channels"], int(spec["layers_per_block"]),
                                             int(spec["num_train_timesteps"]), float(spec["cond_dropout"]))
        self.eval()

    @torch.no_grad()
    def condition(self, ecg: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """The L2-normalised aligned ECG embedding ``(B, embed_dim)`` of ECG windows ``(B, L, T)``."""
        return nn.functional.normalize(self.ecg_projection(self.ecg_encoder(ecg, lead_mask)).float(), dim=-1)

    @torch.no_grad()
    def generate(self, ecg: Tensor, lead_mask: Tensor | None = None, *, guidance: float = 3.0, steps: int = 50,
                 seed: int | None = 0) -> Tensor:
        """Generated images ``(B, 1, S, S)`` in [0, 1] from ECG windows (DDIM, :meth:`ECGToImageDiffusion.generate`)."""
        return self.diffusion.generate(self.condition(ecg, lead_mask), guidance=guidance, steps=steps, seed=seed)


__all__ += ["GENERATOR_SPEC_KEYS", "ECGImageGenerator"]
