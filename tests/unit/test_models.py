import pytest
import torch

from toolkit.errors import UserError
from toolkit.models import create_model, get_head, input_size_for, list_models

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
