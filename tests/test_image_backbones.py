"""Image backbones: EfficientNet-Lite0 from its file as published (against a reference written here from the
paper's table), clear lines for files that do not fit, each backbone's own normalisation, the feature cache."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from factory import LITE0_STAGES as STAGES
from factory import lite0_published_state as published_state
from pipeline.models.feature_cache import FeatureCache
from pipeline.models.image_backbones import IMAGENET_MEAN, IMAGENET_STD
from pipeline.models.image_encoder import ImageEncoder


def reference_features(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Lite0's pooled features, written from the paper's table and TensorFlow's "SAME" padding."""

    def conv(x, name, stride=1, groups=1):
        w = state[f"{name}.weight"]
        k = w.shape[-1]
        pads = []
        for size in (x.shape[3], x.shape[2]):  # width, then height, as F.pad takes them
            total = max((-(-size // stride) - 1) * stride + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, stride=stride, groups=groups)

    def bn(x, name):
        s = {k: state[f"{name}.{k}"] for k in ("running_mean", "running_var", "weight", "bias")}
        return F.batch_norm(x, s["running_mean"], s["running_var"], s["weight"], s["bias"], eps=1e-3)

    x = F.relu6(bn(conv(x, "_conv_stem", 2), "_bn0"))
    i = 0
    for expansion, _, stride, _, blocks in STAGES:
        for j in range(blocks):
            p, inputs = f"_blocks.{i}.", x
            if expansion != 1:
                x = F.relu6(bn(conv(x, p + "_expand_conv"), p + "_bn0"))
            x = F.relu6(bn(conv(x, p + "_depthwise_conv", stride if j == 0 else 1, x.shape[1]), p + "_bn1"))
            x = bn(conv(x, p + "_project_conv"), p + "_bn2")
            if x.shape == inputs.shape:
                x = x + inputs
            i += 1
    return F.relu6(bn(conv(x, "_conv_head"), "_bn1")).mean(dim=(2, 3))


@pytest.mark.parametrize("size", [64, 50])  # 50: odd feature maps (25, 13, 7) at stride-2 convolutions
def test_lite0_loads_the_published_layout_and_equals_the_reference(tmp_path, size):
    state = published_state()
    path = tmp_path / "efficientnet-lite0.pth"
    torch.save(state, path)
    encoder = ImageEncoder("efficientnet_lite0", weights_path=str(path)).eval()
    assert encoder.out_dim == 1280
    images = torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = encoder(images)
        want = reference_features(state, images.float() / 127.5 - 1)  # Lite0 reads pixels in [-1, 1]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert encoder.last_conv_block is encoder.backbone.features


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text
    return text


def test_a_weights_file_that_does_not_fit_is_one_line_naming_what(tmp_path):
    state = published_state()
    short = tmp_path / "short.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("_blocks.3._bn1")}, short)
    with pytest.raises(ValueError) as e:
        ImageEncoder("efficientnet_lite0", weights_path=str(short))
    assert "4 missing keys" in one_line(e) and "features.3.0.block.1.1" in one_line(e)
    resnet = tmp_path / "resnet18.pt"
    torch.save(ImageEncoder("resnet18").backbone.state_dict(), resnet)
    with pytest.raises(ValueError) as e:
        ImageEncoder("efficientnet_lite0", weights_path=str(resnet))
    assert "unexpected" in one_line(e) and "conv1.weight" in one_line(e)
    wrong_shape = tmp_path / "wrong.pth"
    torch.save({**state, "_conv_head.weight": torch.zeros(1280, 320, 3, 3)}, wrong_shape)
    with pytest.raises(ValueError) as e:
        ImageEncoder("efficientnet_lite0", weights_path=str(wrong_shape))
    assert "size mismatch for features.8.0.weight" in one_line(e)
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    with pytest.raises(ValueError) as e:
        ImageEncoder("efficientnet_lite0", weights_path=str(text))
    assert "not a state dict" in one_line(e)
    with pytest.raises(FileNotFoundError) as e:
        ImageEncoder("efficientnet_lite0", weights_path=str(tmp_path / "missing.pth"))
    assert "never downloaded" in one_line(e) and "python -m pipeline.weights get lite0" in one_line(e)


@pytest.mark.parametrize(
    "name, mean, std",
    [
        ("efficientnet_lite0", (0.5,) * 3, (0.5,) * 3),
        ("resnet18", IMAGENET_MEAN, IMAGENET_STD),
        ("mobilenet_v3_small", IMAGENET_MEAN, IMAGENET_STD),
        ("small_cnn", IMAGENET_MEAN, IMAGENET_STD),
    ],
)
def test_each_backbone_gets_the_pixels_its_weights_expect(name, mean, std):
    encoder = ImageEncoder(name, out_dim=8).eval()
    images = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(encoder(images), encoder.backbone((images / 255 - m) / s))


def test_the_feature_cache_serves_equal_features_until_the_weights_change(tmp_path):
    encoder = ImageEncoder("efficientnet_lite0").eval()
    cache = FeatureCache(encoder.backbone)
    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        direct = encoder.features(images)
    first = cache(images, encoder.features)
    assert (cache.misses, cache.hits) == (3, 0)
    again = cache(images[[2, 0]], encoder.features)  # seen pictures, in another batch
    assert (cache.misses, cache.hits) == (3, 2)
    torch.testing.assert_close(first, direct)
    assert torch.equal(again, first[[2, 0]])
    torch.save(published_state(seed=4), tmp_path / "other.pth")
    encoder.spec.load(encoder.backbone, str(tmp_path / "other.pth"))  # other weights
    with torch.no_grad():
        other = encoder.features(images)
    assert not torch.allclose(other, direct)
    torch.testing.assert_close(cache(images, encoder.features), other)
    assert cache.misses == 6
