import pytest
import torch

from toolkit.errors import UserError
from toolkit.models import SMALLCNN_VARIANTS, create_model, get_head, input_size_for, list_models

SMALL = ["smallcnn", "mobilenet_v3_small", "resnet18", "shufflenet_v2_x1_0", "efficientnet_b0"]


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_adapts_to_8x8_grayscale(name):
    size = input_size_for(name, (8, 8))
    model = create_model(name, 10, in_channels=1, input_size=size[0]).eval()
    with torch.no_grad():
        y = model(torch.randn(2, 1, *size))
    assert y.shape == (2, 10)
    assert get_head(model).out_features == 10


def test_unknown_model_suggests_names():
    with pytest.raises(UserError, match="did you mean 'resnet18'"):
        create_model("resnet181", 10)


def test_smallcnn_cannot_be_pretrained():
    with pytest.raises(UserError, match="no pretrained weights"):
        create_model("smallcnn", 10, pretrained=True)


@pytest.mark.parametrize("name", sorted(SMALLCNN_VARIANTS))
def test_smallcnn_variants_have_their_declared_width(name):
    width = SMALLCNN_VARIANTS[name][0]
    model = create_model(name, 12, in_channels=3, input_size=16)
    assert get_head(model).in_features == 4 * width
    assert [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)] == [width, 2 * width, 4 * width]


def test_narrower_smallcnn_has_fewer_parameters():
    sizes = [sum(p.numel() for p in create_model(n, 12).parameters())
             for n in sorted(SMALLCNN_VARIANTS, key=lambda n: SMALLCNN_VARIANTS[n][0])]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mnasnet0_5"])
def test_batchnorm_momentum_suits_short_runs(name):
    """torchvision builds these with momentum 0.01 / 0.0003: after a few hundred steps the running statistics are
    still near (0, 1) and eval predicts one class. One training step must move them by the factory's momentum."""
    from toolkit.models import BN_MOMENTUM

    torch.manual_seed(0)
    model = create_model(name, 10, in_channels=1, input_size=32)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns and all(b.momentum == BN_MOMENTUM for b in bns)
    first = bns[0]
    x = torch.randn(8, 1, 32, 32) * 3 + 5  # far from the (0, 1) initial statistics
    with torch.no_grad():
        model.train()(x)
    assert first.running_mean.abs().max() > 0.05  # momentum 0.01 would leave it ~10x smaller
