"""PathM3Model: correlation module -> Q-Former -> query classifier and caption LM (paper Fig. 1).

Dimensions: b bags, n patches, d feature_dim, q queries, H Q-Former width, C classes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._types import PathLike, ProgressFn
from ..config import PathM3Config
from . import checkpoint as ckpt
from .caption_prefix import CaptionPrefix, conditioning_classes
from .correlation import CorrelationModule
from .device import autocast
from .generation import Decoding, DecodingKwargs
from .heads import CONTRAST_DIM, TEMP_INIT, QueryClassifier, classification_loss
from .language import build_language_model, generate_captions, load_tokenizer
from .objectives import caption_objective, classification_text, contrastive_objective, present, total_loss
from .outputs import Classification, PathM3Output
from .param_groups import weight_decay_groups
from .pretrained import LM_PREFIX
from .qformer import QFormer, QFormerOutput, load_bert_text_weights
from .verdict import TrainingVerdict

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["Classification", "PathM3Model", "PathM3Output"]

log = logging.getLogger(__name__)


class PathM3Model(nn.Module):
    """The PathM3 model; build with :func:`napari_pathm3.model.build_model` or :meth:`from_pretrained`."""

    def __init__(
        self,
        config: PathM3Config,
        *,
        qformer_tokenizer: Any | None = None,
        lm_tokenizer: Any | None = None,
        lm_hf_config: Any | None = None,
        pretrained_init: bool = True,
        qformer_text_side: bool = True,
    ) -> None:
        """Build every part from ``config``.

        Args:
            config: the model config.
            qformer_tokenizer, lm_tokenizer, lm_hf_config: saved parts of a checkpoint (no download).
            pretrained_init: load pretrained LM and BERT weights named by the config (False when the weights
                come from a checkpoint afterwards).
        """
        super().__init__()
        self.config = config
        #: the folder :meth:`from_pretrained` loaded this model from (None for a model built in memory)
        self.checkpoint_dir: Path | None = None
        #: the training verdict of a model trained in this process (else read from beside the checkpoint)
        self.training_verdict: TrainingVerdict | None = None
        self.qformer_tokenizer = qformer_tokenizer or load_tokenizer(config.qformer.tokenizer)
        self.correlation = CorrelationModule(
            config.feature_dim, config.correlation, use_attention=config.use_correlation
        )
        self.qformer = QFormer(
            config.qformer,
            encoder_hidden_size=config.cross_attention_width,
            vocab_size=len(self.qformer_tokenizer),
            pad_token_id=self.qformer_tokenizer.pad_token_id or 0,
            chunk_size=config.correlation.chunk_size,  # one chunk size for the whole model
            text_side=qformer_text_side,
        )
        if pretrained_init and config.qformer.text_init:
            load_bert_text_weights(self.qformer, config.qformer.text_init)
        self.classifier = QueryClassifier(config.qformer.hidden_size, config.num_classes)
        self.language_model, self.lm_tokenizer = build_language_model(
            config.language,
            fallback_tokenizer=config.qformer.tokenizer,
            tokenizer=lm_tokenizer,
            hf_config=lm_hf_config,
            load_weights=pretrained_init,
        )
        lm_width = int(self.language_model.get_input_embeddings().weight.shape[1])  # type: ignore[operator]
        self.language_projection = nn.Linear(config.qformer.hidden_size, lm_width)
        if config.caption_prefix.extra_tokens:  # §5a; built only when on, so "off" is the same model
            self.caption_prefix = CaptionPrefix(
                config.caption_prefix,
                width=config.feature_dim,  # the gates read each patch's own feature (instance level)
                lm_width=lm_width,
                num_classes=config.num_classes,
                lse_features=config.qformer.num_query_tokens
                * config.qformer.num_attention_heads
                * len(range(0, config.qformer.num_hidden_layers, config.qformer.cross_attention_frequency)),
            )
        if config.itc_weight > 0:  # BLIP-2's ITC heads (names as in Blip2ForImageTextRetrieval)
            self.vision_proj = nn.Linear(config.qformer.hidden_size, CONTRAST_DIM)
            self.text_proj = nn.Linear(config.qformer.hidden_size, CONTRAST_DIM)
            self.temp = nn.Parameter(torch.tensor(TEMP_INIT))
        #: what run made these weights (``RunProvenance.to_dict()``): set by the trainer, saved in config.json
        self.provenance: dict[str, object] | None = None
        #: what ``config.qformer_init`` loaded (None: random Q-Former, or weights read from a checkpoint)
        self.qformer_init_report: Any = None
        if pretrained_init and config.qformer_init:
            from .blip2_init import load_blip2_qformer

            self.qformer_init_report = load_blip2_qformer(self, config.qformer_init)

    # ------------------------------------------------------------------------------------ helpers
    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def device(self) -> torch.device:
        return self.query_tokens.device

    @property
    def query_tokens(self) -> nn.Parameter:
        return self.qformer.query_tokens

    def train(self, mode: bool = True) -> PathM3Model:
        """Like ``nn.Module.train``, but a frozen LM stays in eval mode (no dropout), as in BLIP-2."""
        super().train(mode)
        if not self.config.language.trainable:
            self.language_model.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters the optimiser should update (everything except a frozen LM)."""
        return [p for p in self.parameters() if p.requires_grad]

    def optimizer_param_groups(self) -> list[dict[str, object]]:
        """AdamW parameter groups (see :func:`~.param_groups.weight_decay_groups`)."""
        optim = self.config.optim
        return weight_decay_groups(self.named_parameters(), optim.weight_decay, rule=optim.weight_decay_rule)

    def _check_inputs(self, features: Tensor, mask: Tensor | None) -> Tensor:
        if features.ndim != 3 or features.shape[-1] != self.config.feature_dim:
            raise ValueError(
                f"features: expected (bags, patches, {self.config.feature_dim}), got {tuple(features.shape)}; "
                f"use features of the encoder this model was built for ({self.config.encoder_name or 'unrecorded'})"
            )
        b, n, _ = features.shape
        if mask is None:
            return torch.ones(b, n, dtype=torch.bool, device=features.device)
        if mask.shape != (b, n):
            raise ValueError(f"mask: expected shape {(b, n)}, got {tuple(mask.shape)}")
        mask = mask.bool()
        if not bool(mask.any(dim=1).all()):
            raise ValueError("mask: every bag needs at least one real patch")
        return mask

    def _tokenize_text(self, text: Sequence[str | None]) -> tuple[Tensor, Tensor]:
        """Q-Former token ids and mask; a missing text (None or blank) gets an all-zero mask row, so that
        bag's queries attend to no text token: exactly the image-only path."""
        has = present(text)
        enc = self.qformer_tokenizer(
            [t if p else "" for t, p in zip(text, has, strict=True)],
            padding=True,
            truncation=True,
            max_length=self.config.qformer.max_text_length,
            return_tensors="pt",
        )
        tmask = enc["attention_mask"] * torch.tensor(has, dtype=enc["attention_mask"].dtype)[:, None]
        return enc["input_ids"].to(self.device), tmask.to(self.device)

    def _run_qformer(
        self, patches: Tensor | None, mask: Tensor | None, text: Sequence[str | None] | None
    ) -> QFormerOutput:
        if text is not None and not any(present(text)):
            text = None  # no bag has text: the image-only pass, without tokenizing
        ids, tmask = self._tokenize_text(text) if text is not None else (None, None)
        # the image-only pass feeds the caption prefix: its log-normalisers when the count tokens read them
        return self.qformer(patches, mask, ids, tmask, need_lse=text is None and self._needs_lse)

    # ------------------------------------------------------------------------------------ forward
    def forward(
        self,
        features: Tensor | None = None,
        mask: Tensor | None = None,
        captions: Sequence[str | None] | None = None,
        labels: Tensor | None = None,
        text: Sequence[str | None] | None = None,
    ) -> PathM3Output:
        """Classification logits and, given targets, the losses of eq. (3), L_G and eq. (4).

        Args:
            features: (b, n, feature_dim) patch features (may be None only in ``mode="text"``).
            mask: (b, n) bool, True for real patches (None: no padding).
            captions: b caption strings, None (or blank) for a bag without one: targets of the LM (the caption
                branch sees the image only). A caption-less bag adds nothing to L_G; the others still do.
            labels: (b,) class indices into ``config.class_names``; -100 for a bag without a class.
            text: b strings fed into the Q-Former with the queries for classification (``mode="image_text"``,
                e.g. the captions during training; None at inference) or required in ``mode="text"``. In
                ``image_text`` a None entry makes that bag's queries see no text (its image-only path).

        Returns:
            :class:`PathM3Output`. ``loss`` = α·L_C + (1 − α)·L_G (+ ``itc_weight``·L_ITC) with α fixed: a term
            whose targets are all absent (no label, or no caption in the batch) is left out, the others keep
            their weights.
        """
        mode = self.config.mode
        patches, mask = self._encode(features, mask, mode)
        b = patches.shape[0] if patches is not None else None
        text = classification_text(mode, text, captions, b)
        cls_out = self._run_qformer(*((None, None) if mode == "text" else (patches, mask)), text)
        logits = self.classifier(cls_out.query_output)
        # the image-only pass (queries that never saw text): what inference runs, and the only source of the
        # LM prefix and of the ITC image side, so no caption loss can be lowered through text-read queries
        image_only = cls_out if text is None else None
        loss_cls = None
        if labels is not None:
            loss_cls, image_only = self._classification_loss(logits, labels, text, patches, mask, image_only)
            count_loss = self._count_loss(
                features, mask, labels
            )  # §5a: the count heads learn from the labels
            loss_cls = loss_cls if count_loss is None else loss_cls + count_loss
        loss_caption = loss_itc = None
        if captions is not None and any(present(captions)):
            if patches is None or features is None or mask is None:
                raise ValueError("captions need features: the caption branch is image-only")
            image_only = image_only if image_only is not None else self._run_qformer(patches, mask, None)
            extra = self._extra_prefix(features, mask, image_only, labels)
            loss_caption = caption_objective(self, image_only.query_output, captions, extra=extra)
            loss_itc = contrastive_objective(self, image_only.query_output, captions)
        return PathM3Output(
            logits=logits,
            loss=total_loss(self.config, loss_cls, loss_caption, loss_itc),
            loss_cls=loss_cls,
            loss_caption=loss_caption,
            query_attention=(image_only if image_only is not None else cls_out).cross_attention,
            query_output=cls_out.query_output,
            loss_itc=loss_itc,
        )

    def _count_loss(self, features: Tensor | None, mask: Tensor | None, labels: Tensor) -> Tensor | None:
        """The count heads' own cross-entropy (``caption_prefix.count_classifier``; None when off)."""
        prefix = getattr(self, "caption_prefix", None)
        if prefix is None or features is None or mask is None:
            return None
        logits = prefix.class_logits(features.to(self.device), mask)
        return None if logits is None else classification_loss(logits, labels.to(self.device))

    @property
    def _needs_lse(self) -> bool:
        prefix = getattr(self, "caption_prefix", None)
        return prefix is not None and prefix.needs_log_normaliser

    def _extra_prefix(
        self, features: Tensor, mask: Tensor, image_only: QFormerOutput, labels: Tensor | None
    ) -> Tensor | None:
        """The ``caption_prefix`` tokens (b, k, W) from the patch ``features`` (b, n, d: the count gates read each
        patch's own feature) and the image-only pass, or None when the extension is off.
        The class token gets ``labels`` where known (teacher forcing), else the image-only prediction."""
        if not self.config.caption_prefix.extra_tokens:
            return None
        classes = None
        if self.config.caption_prefix.class_token:
            classes = conditioning_classes(labels, self.classifier(image_only.query_output))
        return self.caption_prefix(features.to(self.device), mask, classes, image_only.log_normaliser)

    def caption_prefix_embeddings(self, features: Tensor, mask: Tensor, image_only: QFormerOutput) -> Tensor:
        """The LM prefix at inference (b, q + k, W): projected image-only queries, then the ``caption_prefix``
        tokens with the classifier's predicted class."""
        prefix = self.language_projection(image_only.query_output)
        extra = self._extra_prefix(features, mask, image_only, None)
        return prefix if extra is None else torch.cat([prefix, extra.to(prefix.dtype)], dim=1)

    def _encode(
        self, features: Tensor | None, mask: Tensor | None, mode: str
    ) -> tuple[Tensor | None, Tensor | None]:
        """Correlated patch features (b, n, D) and the bool mask on the model's device (None, None: text mode)."""
        if features is None:
            if mode != "text":
                raise ValueError(f"features are required in mode {mode!r}")
            return None, None
        mask = self._check_inputs(features, mask).to(self.device)
        return self.correlation(features.to(self.device), mask), mask

    def _classification_loss(
        self,
        logits: Tensor,
        labels: Tensor,
        text: Sequence[str | None] | None,
        patches: Tensor | None,
        mask: Tensor | None,
        image_only: QFormerOutput | None,
    ) -> tuple[Tensor, QFormerOutput | None]:
        """L_C, eq. (3); in ``image_text`` training with text also the image-only cross-entropy
        (``train_image_only_path``): L_C = ½ (CE_text + CE_image). Returns L_C and the image-only pass."""
        targets = labels.to(self.device)
        loss_cls = classification_loss(logits, targets)
        if text is not None and self.config.mode == "image_text" and self.config.train_image_only_path:
            image_only = self._run_qformer(patches, mask, None)
            loss_img = classification_loss(self.classifier(image_only.query_output), targets)
            loss_cls = 0.5 * (loss_cls + loss_img)
        return loss_cls, image_only

    # ------------------------------------------------------------------------------------ inference
    @torch.no_grad()
    def classify(
        self, features: Tensor | None, mask: Tensor | None = None, text: Sequence[str | None] | None = None
    ) -> Classification:
        """Class probabilities and per-query attention (b, q, n) for heatmaps; bf16 autocast on CUDA.

        Call ``model.eval()`` first (dropout). ``text`` is used in modes "image_text" and "text" only.
        """
        with autocast(self.device):
            out = self.forward(features, mask, text=text)
        assert out.logits is not None
        logits = out.logits.float()
        attention = out.query_attention.float() if out.query_attention is not None else None
        return Classification(torch.softmax(logits, dim=-1), logits, attention, self.class_names)

    @torch.no_grad()
    def generate_captions(
        self,
        features: Tensor,
        mask: Tensor | None = None,
        *,
        prompt: str | None = None,
        progress: ProgressFn | None = None,
        **decoding: Unpack[DecodingKwargs],
    ) -> list[str]:
        """Captions from the image only: greedy (default), beam (``num_beams``) or sampling (``do_sample``).

        Args:
            features, mask: as in :meth:`forward`.
            prompt: text after the query prefix (default ``config.language.prompt``).
            progress: ``CAPTION`` events, decoding steps of ``max_new_tokens``.
            decoding: the fields of :class:`~napari_pathm3.model.generation.Decoding` (``max_new_tokens``,
                default ``config.language.max_caption_tokens``; ``num_beams``, ``do_sample``, ``seed``...).

        Returns:
            b caption strings.
        """
        options = Decoding(**decoding)
        lang = self.config.language
        options = dataclasses.replace(
            options, max_new_tokens=options.max_new_tokens or lang.max_caption_tokens
        )
        mask = self._check_inputs(features, mask).to(self.device)
        with autocast(self.device):
            patches = self.correlation(features.to(self.device), mask)
            image_only = self.qformer(patches, mask, need_weights=False, need_lse=self._needs_lse)
            prefix = self.caption_prefix_embeddings(features, mask, image_only)
            return generate_captions(
                self.language_model,
                self.lm_tokenizer,
                lang.kind,
                prefix,
                prompt=lang.prompt if prompt is None else prompt,
                decoding=options,
                progress=progress,
            )

    # ------------------------------------------------------------------------------------ checkpoints
    def _stores_lm(self) -> bool:
        lang = self.config.language
        return lang.trainable or lang.save_frozen_weights or lang.name is None

    def save_pretrained(self, directory: PathLike) -> Path:
        """Save config.json, model.safetensors and tokenizers to ``directory`` (atomically).

        A frozen pretrained LM is stored too unless ``config.language.save_frozen_weights`` is False; then
        only its id is kept and :meth:`from_pretrained` reloads it from ``config.language.name``.
        """
        if not self.qformer.text_side:
            raise ValueError(
                "this model was loaded without the Q-Former's text side (text_side=False): load the checkpoint "
                "with text_side=True to save or train it"
            )
        state = self.state_dict()
        if not self._stores_lm():
            state = {k: v for k, v in state.items() if not k.startswith(LM_PREFIX)}
        return ckpt.write_checkpoint(
            directory,
            config=self.config.to_dict(),
            state=state,
            writers={
                "qformer_tokenizer": self.qformer_tokenizer.save_pretrained,
                "lm_tokenizer": self.lm_tokenizer.save_pretrained,
                "language_model": self.language_model.config.save_pretrained,  # type: ignore[union-attr,dict-item]  # an HF config
            },
            provenance=self.provenance,
        )

    @classmethod
    def from_pretrained(
        cls,
        directory: PathLike,
        *,
        expected_feature_dim: int | None = None,
        expected_encoder: str | None = None,
        expected_classes: tuple[str, ...] | list[str] | None = None,
        device: str | torch.device = "cpu",
        text_side: bool = True,
        progress: ProgressFn | None = None,
    ) -> PathM3Model:
        """Load a checkpoint written by :meth:`save_pretrained` (offline unless the LM was stored by id).

        Args:
            directory: the checkpoint folder.
            expected_feature_dim, expected_encoder, expected_classes: fail with a :class:`CheckpointError`
                when the checkpoint does not fit them (the error names the mismatch and the fix).
            device: "auto", "cpu", "cuda", ...
            text_side: False leaves out the Q-Former's text-only weights (not even read from disk): for
                image-only classification and captioning, ~300 MB less at paper sizes; feeding such a model
                text raises.
            progress: ``LOAD_MODEL`` events with the bytes of ``model.safetensors`` read so far.

        Returns:
            The model in eval mode on ``device``.
        """
        from .pretrained import load_pretrained

        return load_pretrained(
            cls,
            directory,
            expected_feature_dim=expected_feature_dim,
            expected_encoder=expected_encoder,
            expected_classes=expected_classes,
            device=device,
            text_side=text_side,
            progress=progress,
        )
