"""The model zoo used by the tests: input sizes, the fast subset, known gaps."""

from __future__ import annotations

# one input size per family: big enough for every downsampling, small enough for CPU tests
_BIG = ("vit_", "swin_", "maxvit")


def input_size_for(name: str) -> tuple[int, int, int]:
    if name.startswith(_BIG):
        return (3, 224, 224)
    if name.startswith(("inception", "googlenet")):
        return (3, 96, 96)
    return (3, 64, 64)


# small, fast teachers covering every structure surgery must handle (fast suite)
FAST_ZOO = [
    "resnet18",
    "resnet50",
    "vgg11_bn",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "shufflenet_v2_x0_5",
    "squeezenet1_1",
    "mnasnet0_5",
    "regnet_x_400mf",
    "densenet121",
    "convnext_tiny",
    "googlenet",
    "resnext50_32x4d",
]
