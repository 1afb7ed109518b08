"""A clip encoder learned from the user's own footage: per-frame convolutional stem -> spatial attention pooling ->
dilated temporal convolution -> one vector per clip.

No pretrained video weights exist offline, and a fixed descriptor keeps whatever dominates its distances (on other
footage: background, lighting, scene colour). This network is small enough to train on two CPU cores in minutes at
32-64 px and is trained by `videobert train-encoder` (`training/encoder.py`) on the corpus's own narrated videos;
the same code runs on bigger frames on a GPU.

Shapes (B clips, F frames sampled per clip, C channels, h x w stem grid, D = hidden_size)::

    clips (B, T, H, W, 3) uint8 ──sample F frames──> (B, F, H, W, 3)
      -> RGB, normalised, + the difference to the previous sampled frame (motion)    (B*F, 6, H, W)
      -> conv stem (stride 4)                                                          (B*F, C, h, w)
      -> spatial attention pooling (heads over the h*w positions) + linear             (B, F, D)   frame states
      -> temporal convolution blocks (residual, dilations 1, 2, 4, ...)                (B, F, D)   temporal states
      -> mean over frames + linear (+ projected descriptor, optional) + LayerNorm       (B, D)      clip vector

`ClipEncoderModel` is the backbone `extract --backbone encoder:DIR` runs. `ClipEncoderForPreTraining` adds what
self-supervision needs (a bag-of-words narration encoder or a projection of frozen sentence embeddings, projection
heads, the masked-frame token and the frame predictors); its losses live in `training/encoder.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput

from videobert.utils.errors import ConfigError

# Input normalisation of RGB in [0, 1]: centred, unit-ish scale; fixed so that no statistic of one corpus is baked in.
_PIXEL_MEAN, _PIXEL_STD = 0.45, 0.25


class ClipEncoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`ClipEncoderModel`] and [`ClipEncoderForPreTraining`].

    Args:
        image_size (`int`, defaults to 32):
            Side of the square frames the encoder reads (`extract` decodes clips at this size).
        num_frames (`int`, defaults to 8):
            Frames sampled per clip, at the centres of equal parts of the clip.
        motion_channels (`bool`, defaults to `True`):
            Feed each frame's difference to the previous sampled frame beside its RGB, so that the stem sees
            motion directly.
        stem_channels (`list[int]`, defaults to `[32, 64, 64]`):
            Output channels of the three stem convolutions (strides 2, 2, 1).
        attention_heads (`int`, defaults to 4):
            Heads of the spatial attention pooling (each a softmax over the stem grid).
        hidden_size (`int`, defaults to 128):
            Width of the frame, temporal and clip vectors (the backbone's output dimension).
        temporal_layers (`int`, defaults to 2):
            Residual temporal convolution blocks; block `i` has dilation `2 ** i`.
        temporal_kernel (`int`, defaults to 3):
            Kernel size of the temporal convolutions.
        causal (`bool`, defaults to `False`):
            Temporal convolutions see only past frames (padding on the left) in the clip vector too, not only in
            next-frame prediction.
        dropout (`float`, defaults to 0.1):
            Dropout in the temporal blocks.
        text_vocab (`list[str]`, *optional*):
            Words of the bag-of-words narration encoder (pretraining only); index 0 is the unknown word.
        text_feature_dim (`int`, *optional*):
            Width of frozen sentence embeddings to project instead of the bag of words (pretraining only).
        text_encoder (`str`, *optional*):
            Where the frozen sentence embeddings came from (a model directory), recorded for the record.
        descriptor (`str`, *optional*):
            A weight-free clip descriptor read beside the frames (`"pixels"`: the `pixels` backbone's appearance and
            motion descriptor, computed by the caller): its learned projection is added to the clip vector, so that
            training decides which of its parts the narration needs. `None`: frames only.
        descriptor_dim (`int`, *optional*):
            Width of the descriptor; required with `descriptor`.
        embed_dim (`int`, defaults to 128):
            Width of the joint clip-sentence space of the narration contrast (pretraining only).
    """

    model_type = "videobert-clip-encoder"

    image_size: int = 32
    num_frames: int = 8
    motion_channels: bool = True
    stem_channels: list[int] | tuple[int, ...] = (32, 64, 64)
    attention_heads: int = 4
    hidden_size: int = 128
    temporal_layers: int = 2
    temporal_kernel: int = 3
    causal: bool = False
    dropout: float = 0.1
    text_vocab: list[str] | None = None
    text_feature_dim: int | None = None
    text_encoder: str | None = None
    descriptor: str | None = None
    descriptor_dim: int | None = None
    embed_dim: int = 128

    def __post_init__(self, **kwargs) -> None:
        super().__post_init__(**kwargs)
        self.stem_channels = list(self.stem_channels)
        if self.image_size < 8 or self.image_size % 4:
            raise ConfigError(f"image_size must be a multiple of 4 and at least 8, got {self.image_size}")
        if self.num_frames < 2:
            raise ConfigError(f"num_frames must be at least 2 (motion needs two frames), got {self.num_frames}")
        if len(self.stem_channels) != 3 or min(self.stem_channels) < 1:
            raise ConfigError(f"stem_channels must be three positive widths, got {self.stem_channels}")
        if self.stem_channels[-1] % self.attention_heads:
            raise ConfigError(
                f"the last stem width ({self.stem_channels[-1]}) must be divisible by attention_heads ({self.attention_heads})"
            )
        if self.temporal_kernel < 1 or self.temporal_layers < 0:
            raise ConfigError("temporal_kernel must be positive and temporal_layers non-negative")
        if self.descriptor not in (None, "pixels"):
            raise ConfigError(f"descriptor must be None or 'pixels', got {self.descriptor!r}")
        if self.descriptor is not None and not (self.descriptor_dim or 0) > 0:
            raise ConfigError(f"descriptor {self.descriptor!r} needs a positive descriptor_dim, got {self.descriptor_dim}")
        if self.text_vocab is not None and self.text_feature_dim is not None:
            raise ConfigError("give either text_vocab (bag of words) or text_feature_dim (frozen embeddings), not both")

    @property
    def grid(self) -> int:
        """Side of the stem's output grid."""
        return self.image_size // 4


@dataclass
class ClipEncoderOutput(ModelOutput):
    """
    Args:
        clip_embeds (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): one vector per clip.
        temporal_states (`torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`): after the temporal
            convolutions.
        frame_states (`torch.FloatTensor` of shape `(batch_size, num_frames, hidden_size)`): after spatial pooling,
            before any temporal mixing (the targets of masked-frame and next-frame prediction).
        spatial_attention (`torch.FloatTensor` of shape `(batch_size, num_frames, heads, grid * grid)`): where each
            pooling head looked.
    """

    clip_embeds: torch.FloatTensor | None = None
    temporal_states: torch.FloatTensor | None = None
    frame_states: torch.FloatTensor | None = None
    spatial_attention: torch.FloatTensor | None = None


class ClipEncoderPreTrainedModel(PreTrainedModel):
    config_class = ClipEncoderConfig
    base_model_prefix = "encoder"
    main_input_name = "pixel_values"

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="linear")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ClipEncoderModel):
            nn.init.normal_(module.position, std=0.02)
        elif isinstance(module, ClipEncoderForPreTraining):
            nn.init.normal_(module.mask_frame, std=0.02)
            nn.init.constant_(module.logit_scale, 2.659)  # log(1 / 0.07), CLIP's initial temperature


class TemporalBlock(nn.Module):
    """Residual dilated 1-D convolution over frames. ``causal`` pads on the left only, so position t sees frames
    <= t; otherwise the padding is split and t sees both sides. The same weights serve both."""

    def __init__(self, width: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.conv = nn.Conv1d(width, width, kernel, dilation=dilation)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        pad = self.dilation * (self.kernel - 1)
        left = pad if causal else pad // 2
        h = F.pad(x.transpose(1, 2), (left, pad - left))  # (B, F, D) -> (B, D, F + pad)
        h = self.conv(h).transpose(1, 2)  # (B, D, F) -> (B, F, D)
        return x + self.dropout(F.gelu(self.norm(h)))


class ClipEncoderModel(ClipEncoderPreTrainedModel):
    """The clip encoder (module docstring): uint8 clips or normalised pixel values in, one vector per clip out."""

    def __init__(self, config: ClipEncoderConfig):
        super().__init__(config)
        c1, c2, c3 = config.stem_channels
        inputs = 6 if config.motion_channels else 3
        self.stem = nn.Sequential(
            nn.Conv2d(inputs, c1, 5, stride=2, padding=2), nn.GroupNorm(1, c1), nn.GELU(),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GroupNorm(1, c2), nn.GELU(),
            nn.Conv2d(c2, c3, 3, stride=1, padding=1), nn.GroupNorm(1, c3), nn.GELU(),
        )  # fmt: skip
        self.position = nn.Parameter(torch.zeros(1, c3, config.grid, config.grid))
        self.attention = nn.Conv2d(c3, config.attention_heads, 1)  # one attention logit per head and position
        self.frame_proj = nn.Linear(c3, config.hidden_size)
        self.temporal = nn.ModuleList(
            TemporalBlock(config.hidden_size, config.temporal_kernel, 2**i, config.dropout)
            for i in range(config.temporal_layers)
        )
        self.clip_proj = nn.Linear(config.hidden_size, config.hidden_size)
        if config.descriptor is not None:
            d = config.hidden_size
            self.descriptor_proj = nn.Sequential(
                nn.LayerNorm(config.descriptor_dim), nn.Linear(config.descriptor_dim, d), nn.GELU(), nn.Linear(d, d)
            )
        else:
            self.descriptor_proj = None
        self.clip_norm = nn.LayerNorm(config.hidden_size)
        self.post_init()

    def frame_indices(self, length: int) -> torch.Tensor:
        """Indices of the `num_frames` frames sampled from a clip of `length` frames: the centres of equal parts."""
        n = self.config.num_frames
        return ((torch.arange(n, dtype=torch.float64) + 0.5) * length / n).long()

    def pixel_values(self, clips: torch.Tensor) -> torch.Tensor:
        """`(B, T, H, W, 3)` uint8 clips -> `(B, F, C, H, W)` float model input (RGB normalised, plus motion)."""
        if clips.ndim != 5 or clips.shape[-1] != 3:
            raise ValueError(f"expected (B, T, H, W, 3) clips, got {tuple(clips.shape)}")
        size = self.config.image_size
        if tuple(clips.shape[2:4]) != (size, size):
            raise ValueError(f"expected {size}x{size} frames, got {tuple(clips.shape[2:4])}")
        frames = clips[:, self.frame_indices(clips.shape[1]).to(clips.device)]  # (B, F, H, W, 3)
        x = frames.permute(0, 1, 4, 2, 3).float() / 255.0  # (B, F, H, W, 3) -> (B, F, 3, H, W)
        rgb = (x - _PIXEL_MEAN) / _PIXEL_STD
        if not self.config.motion_channels:
            return rgb
        motion = torch.zeros_like(x)
        motion[:, 1:] = (x[:, 1:] - x[:, :-1]) / _PIXEL_STD  # the first frame has no previous one
        return torch.cat([rgb, motion], dim=2)  # (B, F, 6, H, W)

    def encode_frames(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`(B, F, C, H, W)` -> frame states `(B, F, D)` and spatial attention `(B, F, heads, h*w)`."""
        b, f = pixel_values.shape[:2]
        x = self.stem(pixel_values.flatten(0, 1)) + self.position  # (B*F, C, H, W) -> (B*F, c3, h, w)
        logits = self.attention(x).flatten(2)  # (B*F, heads, h*w)
        weights = logits.softmax(dim=-1)
        heads = self.config.attention_heads
        values = x.flatten(2).unflatten(1, (heads, -1))  # (B*F, c3, h*w) -> (B*F, heads, c3/heads, h*w)
        pooled = torch.einsum("nhcp,nhp->nhc", values, weights).flatten(1)  # (B*F, c3)
        frames = self.frame_proj(pooled).view(b, f, -1)  # (B*F, D) -> (B, F, D)
        return frames, weights.view(b, f, heads, -1)

    def temporal_mix(self, frames: torch.Tensor, causal: bool | None = None) -> torch.Tensor:
        """`(B, F, D)` frame states -> `(B, F, D)` temporal states."""
        causal = self.config.causal if causal is None else causal
        for block in self.temporal:
            frames = block(frames, causal)
        return frames

    def pool(self, temporal: torch.Tensor, descriptor: torch.Tensor | None = None) -> torch.Tensor:
        """`(B, F, D)` temporal states (and the `(B, descriptor_dim)` descriptors, when the encoder reads them) ->
        `(B, D)` clip vectors."""
        clip = self.clip_proj(temporal.mean(dim=1))
        if self.descriptor_proj is not None:
            if descriptor is None:
                raise ValueError(f"this encoder reads the {self.config.descriptor!r} descriptor of each clip: pass descriptor")
            clip = clip + self.descriptor_proj(descriptor)
        return self.clip_norm(clip)

    def forward(
        self,
        clips: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        descriptor: torch.Tensor | None = None,
    ) -> ClipEncoderOutput:
        if (clips is None) == (pixel_values is None):
            raise ValueError("pass exactly one of clips (uint8) and pixel_values")
        if pixel_values is None:
            pixel_values = self.pixel_values(clips)
        frames, attention = self.encode_frames(pixel_values)
        temporal = self.temporal_mix(frames)
        return ClipEncoderOutput(
            clip_embeds=self.pool(temporal, descriptor),
            temporal_states=temporal,
            frame_states=frames,
            spatial_attention=attention,
        )


class ClipEncoderForPreTraining(ClipEncoderPreTrainedModel):
    """The encoder plus the heads of its self-supervised objectives:

    * narration contrast: `clip_head` and `text_head` map clip vectors and sentences into one space, scored by
      cosine times `logit_scale`; sentences are a bag of word embeddings (`config.text_vocab`) or frozen sentence
      embeddings (`config.text_feature_dim`);
    * masked frames: `mask_frame` replaces the frame states of masked frames; `masked_head` predicts them back from
      the temporal states;
    * next frame: `next_head` predicts frame state t + 1 from the causal temporal state at t.
    """

    def __init__(self, config: ClipEncoderConfig):
        super().__init__(config)
        d, e = config.hidden_size, config.embed_dim
        self.encoder = ClipEncoderModel(config)
        if config.text_feature_dim is not None:
            self.words = None
            self.text_in = nn.Linear(config.text_feature_dim, d)
        else:
            self.words = nn.EmbeddingBag(len(config.text_vocab or ["[UNK]"]), d, mode="mean", padding_idx=None)
            self.text_in = nn.Identity()
        self.text_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, e))
        self.clip_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, e))
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.mask_frame = nn.Parameter(torch.zeros(d))
        self.masked_head = nn.Linear(d, d)
        self.next_head = nn.Linear(d, d)
        self.post_init()

    def embed_text(
        self, word_ids: torch.Tensor | None = None, offsets: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sentences -> `(S, embed_dim)` unit vectors: bags given as flat `word_ids` with their start `offsets`
        (`nn.EmbeddingBag`), or `(S, text_feature_dim)` frozen `features`."""
        if self.words is None:
            if features is None:
                raise ValueError("this model projects frozen sentence embeddings: pass features")
            h = self.text_in(features)
        else:
            if word_ids is None or offsets is None:
                raise ValueError("this model encodes bags of words: pass word_ids and offsets")
            h = self.words(word_ids, offsets)
        return F.normalize(self.text_head(h), dim=-1)

    def embed_clips(self, clip_embeds: torch.Tensor) -> torch.Tensor:
        """`(B, hidden)` clip vectors -> `(B, embed_dim)` unit vectors in the joint space."""
        return F.normalize(self.clip_head(clip_embeds), dim=-1)


__all__ = ["ClipEncoderConfig", "ClipEncoderModel", "ClipEncoderForPreTraining", "ClipEncoderOutput"]
