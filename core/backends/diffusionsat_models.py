"""DiffusionSat's metadata-conditioned UNet and ControlNet on current diffusers classes.

See docs/diffusionsat.md. Both models are the stock diffusers models plus
`metadata_embedding`: one `TimestepEmbedding` MLP per metadata value (7 for DiffusionSat).
Each value is projected by the model's own sinusoidal `time_proj`, always in float32 (in
float16, values near 1000 round to steps of 0.5), then cast to the MLP's dtype; the MLP
outputs are added to the timestep embedding. The ControlNet adds the same MLPs applied to
the condition image's metadata as well.

The classes need torch and diffusers, which core modules must not import at import time,
so they are built on first use: `sat_unet_class()`, `sat_controlnet_class()`, or simply
`from core.backends.diffusionsat_models import SatUNet, SatControlNet` (resolved lazily by
the module's `__getattr__`, which is also what lets pickle and diffusers find them).

Loading the published weights unchanged:
- diffusers picks the config keys a class accepts from the signature of its `__init__`.
  The subclasses accept `*args, <new fields>, **kwargs`, so their `__init__` is given an
  explicit `__signature__`: every parameter of the parent plus the new fields. Old configs
  (`_class_name` "SatUNet" or "ControlNetModel", `_diffusers_version` 0.17.0.dev0) load with
  every backbone key, and the new fields are registered in the config.
- `SatControlNet` also accepts the old `conditioning_in_channels` (diffusers'
  `conditioning_channels`) and the integer `conditioning_scale` downsample ratio of the
  condition image (1 for xBD: the condition image has the output's size).
"""

from __future__ import annotations

import inspect
import threading

NUM_METADATA = 7
_EXPORTS = ("SatUNet", "SatControlNet")
_classes: dict = {}
_lock = threading.Lock()


def sat_unet_class():
    """The `SatUNet` class (a `UNet2DConditionModel` with metadata embeddings)."""
    return _build()["SatUNet"]


def sat_controlnet_class():
    """The `SatControlNet` class (a `ControlNetModel` with metadata embeddings)."""
    return _build()["SatControlNet"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return _build()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _signature_with(parent_init, extra: dict) -> inspect.Signature:
    """The parent's `__init__` signature (every named parameter) plus keyword-only `extra`."""
    sig = inspect.signature(parent_init)
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    names = {p.name for p in params}
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
               for name, default in extra.items() if name not in names]
    return sig.replace(parameters=params)


def _condition_strides(conditioning_scale: int, n_blocks: int) -> list[int]:
    """Strides of the downsampling convolutions of the ControlNet condition encoder.

    The condition image is `conditioning_scale` times smaller than the output image, and
    the encoder must bring it to latent size (1/8): each block halves the size until the
    running ratio reaches 8, then keeps it. 1 -> 2,2,2 (stock diffusers); 8 -> 1,1,1.
    """
    if conditioning_scale not in (1, 2, 4, 8):
        raise ValueError(f"conditioning_scale must be 1, 2, 4 or 8 (the condition image's downsample "
                         f"ratio), got {conditioning_scale!r}")
    strides, ratio = [], conditioning_scale
    for _ in range(n_blocks):
        strides.append(2 if ratio < 8 else 1)
        ratio = min(ratio * 2, 8)
    return strides


def _build() -> dict:
    if _classes:
        return _classes
    with _lock:
        if _classes:
            return _classes
        _classes.update(_define())
    return _classes


def _define() -> dict:
    import torch
    from torch import nn
    from diffusers import ControlNetModel, UNet2DConditionModel
    from diffusers.models.embeddings import TimestepEmbedding, Timesteps

    def add_pending_terms(module, inputs, output):
        """Forward hook of `time_embedding`: add the metadata terms set for this call."""
        for term in getattr(module, "_pending_metadata_terms", None) or ():
            output = output + term
        return output

    class _MetadataEmbeddingMixin:
        """`metadata_embedding` and the way its terms reach the timestep embedding.

        The terms are added by a forward hook on `time_embedding` during one forward call:
        the stock forward then adds class/addition embeddings and applies `time_embed_act`,
        so the sum lands where DiffusionSat puts it without copying the parent's forward.
        """

        def _init_metadata(self, use_metadata: bool, num_metadata: int) -> None:
            self.register_to_config(use_metadata=bool(use_metadata), num_metadata=int(num_metadata))
            if not use_metadata:
                self.metadata_embedding = None
                return
            if not isinstance(self.time_proj, Timesteps):
                raise ValueError("DiffusionSat metadata needs the positional (sinusoidal) time projection")
            if getattr(self.config, "class_embeddings_concat", False):
                raise ValueError("DiffusionSat metadata cannot be used with class_embeddings_concat=True")
            proj_dim = self.time_embedding.linear_1.in_features  # the time projection's width
            embed_dim = self.time_embedding.linear_2.out_features
            self.metadata_embedding = nn.ModuleList(
                [TimestepEmbedding(proj_dim, embed_dim) for _ in range(int(num_metadata))])
            self.time_embedding.register_forward_hook(add_pending_terms)

        def metadata_terms(self, metadata, batch: int, device) -> list:
            """One embedding (batch, embed_dim) per metadata value, in the MLPs' dtype.

            `metadata` is (batch, num_metadata) or (num_metadata,) / (1, num_metadata) to
            broadcast; a 3-D (batch, num_metadata, T) tensor (several condition images)
            gives each value's embedding summed over T. The projection runs in float32.
            """
            n = self.config.num_metadata
            md = torch.as_tensor(metadata).to(device=device, dtype=torch.float32)
            shape = tuple(md.shape)
            steps = 1
            if md.dim() == 1:
                md = md[None]
            if md.dim() == 3:
                steps = md.shape[2]
                md = md.permute(0, 2, 1).reshape(-1, md.shape[1])  # (batch * T, n)
            if md.dim() != 2 or md.shape[1] != n:
                raise ValueError(f"metadata must have shape (batch, {n}), got {shape}")
            if md.shape[0] == steps and batch != 1:
                md = md.repeat(batch, 1)
            if md.shape[0] != batch * steps:
                raise ValueError(f"metadata has {md.shape[0] // steps} rows for a batch of {batch}")
            dtype = self.metadata_embedding[0].linear_1.weight.dtype
            terms = []
            for i, mlp in enumerate(self.metadata_embedding):
                projected = self.time_proj(md[:, i])  # float32: Timesteps computes in float32
                term = mlp(projected.to(dtype))
                if steps > 1:
                    term = term.view(batch, steps, -1).sum(dim=1)
                terms.append(term)
            return terms

        def _run_with_terms(self, terms: list, call):
            holder = self.time_embedding
            holder._pending_metadata_terms = terms
            try:
                return call()
            finally:
                holder._pending_metadata_terms = None

        def _check_metadata_use(self, metadata) -> None:
            if self.metadata_embedding is None and metadata is not None:
                raise ValueError(f"this {type(self).__name__} was built with use_metadata=False: "
                                 "it cannot take metadata")

    def load_metadata_from(target, source) -> None:
        if target.metadata_embedding is not None and getattr(source, "metadata_embedding", None) is not None:
            target.metadata_embedding.load_state_dict(source.metadata_embedding.state_dict())

    class SatUNet(_MetadataEmbeddingMixin, UNet2DConditionModel):
        """`UNet2DConditionModel` conditioned on DiffusionSat's metadata vector.

        Extra config: `use_metadata` (default True), `num_metadata` (default 7). Forward
        takes everything the parent takes plus the keyword `metadata`: a (batch,
        num_metadata) float tensor of normalised values; None means all zeros ("no
        metadata"), which is what the unconditional half of classifier-free guidance gets.
        """

        def __init__(self, *args, use_metadata: bool = True, num_metadata: int = NUM_METADATA, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_metadata(use_metadata, num_metadata)

        __init__.__signature__ = _signature_with(
            UNet2DConditionModel.__init__, {"use_metadata": True, "num_metadata": NUM_METADATA})

        def forward(self, sample, timestep, encoder_hidden_states, *args, metadata=None, **kwargs):
            self._check_metadata_use(metadata)
            if self.metadata_embedding is None:
                return super().forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
            batch = sample.shape[0]
            if metadata is None:
                metadata = torch.zeros(batch, self.config.num_metadata)
            terms = self.metadata_terms(metadata, batch, sample.device)
            return self._run_with_terms(
                terms, lambda: super(SatUNet, self).forward(sample, timestep, encoder_hidden_states, *args, **kwargs))

    class SatControlNet(_MetadataEmbeddingMixin, ControlNetModel):
        """`ControlNetModel` conditioned on the target's and the condition image's metadata.

        Extra config: `conditioning_in_channels` (alias of `conditioning_channels`, the name
        DiffusionSat's configs use), `conditioning_scale` (integer downsample ratio of the
        condition image: 1, 2, 4 or 8; not the call-time residual scale), `use_metadata`,
        `num_metadata`. Forward takes the parent's arguments plus `metadata` (the target's,
        None = zeros) and `cond_metadata` (the condition image's, (batch, n) or (batch, n,
        T); None = no condition term). The embedding is t_emb + sum_i MLP_i(proj(metadata_i))
        + sum_i MLP_i(proj(cond_metadata_i)), the same MLPs for both.
        """

        def __init__(self, *args, conditioning_in_channels: int | None = None, conditioning_scale: int = 1,
                     use_metadata: bool = True, num_metadata: int = NUM_METADATA, **kwargs):
            if conditioning_in_channels is not None:
                given = kwargs.get("conditioning_channels")
                if given is not None and int(given) != int(conditioning_in_channels):
                    raise ValueError(f"conditioning_in_channels={conditioning_in_channels} disagrees with "
                                     f"conditioning_channels={given}")
                kwargs["conditioning_channels"] = int(conditioning_in_channels)
            super().__init__(*args, **kwargs)
            convs = [m for i, m in enumerate(self.controlnet_cond_embedding.blocks) if i % 2 == 1]
            for conv, stride in zip(convs, _condition_strides(int(conditioning_scale), len(convs))):
                conv.stride = (stride, stride)
            self.register_to_config(conditioning_in_channels=self.config.conditioning_channels,
                                    conditioning_scale=int(conditioning_scale))
            self._init_metadata(use_metadata, num_metadata)

        __init__.__signature__ = _signature_with(
            ControlNetModel.__init__,
            {"conditioning_in_channels": None, "conditioning_scale": 1, "use_metadata": True,
             "num_metadata": NUM_METADATA})

        def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, *args, metadata=None,
                    cond_metadata=None, **kwargs):
            self._check_metadata_use(metadata if metadata is not None else cond_metadata)
            if self.metadata_embedding is None:
                return super().forward(sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs)
            batch = sample.shape[0]
            if metadata is None:
                metadata = torch.zeros(batch, self.config.num_metadata)
            terms = self.metadata_terms(metadata, batch, sample.device)
            if cond_metadata is not None:
                terms += self.metadata_terms(cond_metadata, batch, sample.device)
            return self._run_with_terms(terms, lambda: super(SatControlNet, self).forward(
                sample, timestep, encoder_hidden_states, controlnet_cond, *args, **kwargs))

        @classmethod
        def from_unet(cls, unet, controlnet_conditioning_channel_order: str = "rgb",
                      conditioning_embedding_out_channels=(16, 32, 96, 256), load_weights_from_unet: bool = True,
                      conditioning_channels: int = 3, conditioning_scale: int = 1):
            """A ControlNet initialised from `unet` (a SatUNet or a plain UNet2DConditionModel):
            same backbone config, encoder weights and metadata MLPs copied when asked for."""
            accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
            config = {k: v for k, v in unet.config.items() if k in accepted and not k.startswith("_")}
            config.update(
                controlnet_conditioning_channel_order=controlnet_conditioning_channel_order,
                conditioning_embedding_out_channels=conditioning_embedding_out_channels,
                conditioning_channels=conditioning_channels, conditioning_scale=conditioning_scale,
                use_metadata=bool(unet.config.get("use_metadata", False)),
                num_metadata=int(unet.config.get("num_metadata", NUM_METADATA)))
            controlnet = cls(**config)
            if load_weights_from_unet:
                for name in ("conv_in", "time_embedding", "down_blocks", "mid_block", "class_embedding",
                             "add_embedding"):
                    src, dst = getattr(unet, name, None), getattr(controlnet, name, None)
                    if isinstance(src, nn.Module) and isinstance(dst, nn.Module):
                        dst.load_state_dict(src.state_dict())
                load_metadata_from(controlnet, unet)
            return controlnet

    for cls in (SatUNet, SatControlNet):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return {"SatUNet": SatUNet, "SatControlNet": SatControlNet}
