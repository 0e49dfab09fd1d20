"""The network's options, declared once: the encoders, fusion and heads that :class:`ComplaintModel` builds."""

from __future__ import annotations

from dataclasses import dataclass

MODALITIES = ("text", "image", "video")


@dataclass(frozen=True)
class NetworkOptions:
    """The network (YAML keys under ``model:``).

    Args:
        modalities: subset of ``text``, ``image``, ``video`` the model reads.
        text_encoder: ``lstm`` (BiLSTM + attention), ``textcnn``, or ``transformer`` (a pretrained model from the
            local folder ``text_pretrained``, pooled by ``text_pooling``: ``mean``, ``cls`` or ``attention``;
            ``text_freeze_layers`` keeps its embeddings and first N layers fixed).
        embed_dim: token embedding size of the ``lstm`` and ``textcnn`` encoders.
        text_hidden: hidden size of the BiLSTM (per direction) or filters of the TextCNN.
        text_layers: BiLSTM layers.
        text_pretrained: local folder of the pretrained text model (``transformer`` only).
        text_pooling: how the transformer's tokens become one vector.
        text_freeze_layers: transformer layers (after the embeddings) kept fixed.
        text_linear: a TF-IDF logistic regression on the text beside the network, blended with it per task
            (see :mod:`pipeline.training.blend`).
        image_backbone: ``small_cnn``, ``mobilenet_v3_small``, ``resnet18``, ``efficientnet_b0`` or
            ``efficientnet_lite0`` (see :mod:`pipeline.models.image_backbones`).
        image_dim: size of an encoded image (``small_cnn``; the others keep their own).
        backbone_weights: local weights file for the image backbone (``efficientnet_lite0``: the file as
            published; the others: a torchvision state dict).
        freeze_backbone: keep the image backbone's weights and batch-norm statistics fixed throughout.
        freeze_batchnorm: keep the image backbone's batch-norm statistics fixed while its weights train.
        image_dropout: dropout on each encoded picture, before the fusion.
        video_temporal: ``attention``, ``lstm`` or ``mean`` over frames.
        share_frame_encoder: video frames go through the photos' image encoder.
        fusion: ``attention`` (modality tokens) or ``concat`` (ablation).
        fusion_dim: size of the fused vector.
        fusion_heads: attention heads of the fusion.
        dropout: dropout in the encoders, fusion and heads.
        unimodal_loss: weight of the auxiliary heads' loss in training: one head per modality reads that
            modality's vector alone, as the fusion takes it in, and learns the labels of the records that have it,
            so no branch waits for the other to learn (Wang et al., "What Makes Training Multi-modal Classification
            Networks Hard?", CVPR 2020). With a teacher it counts in the hard-label loss's share. 0: no such
            heads. They never predict.
    """

    modalities: tuple[str, ...] = MODALITIES
    text_encoder: str = "lstm"
    embed_dim: int = 128
    text_hidden: int = 128
    text_layers: int = 1
    text_pretrained: str | None = None
    text_pooling: str = "mean"
    text_freeze_layers: int = 0
    text_linear: bool = True
    image_backbone: str = "small_cnn"
    image_dim: int = 128
    backbone_weights: str | None = None
    freeze_backbone: bool = False
    freeze_batchnorm: bool = False
    image_dropout: float = 0.0
    video_temporal: str = "attention"
    share_frame_encoder: bool = True
    fusion: str = "attention"
    fusion_dim: int = 128
    fusion_heads: int = 4
    dropout: float = 0.1
    unimodal_loss: float = 0.0
