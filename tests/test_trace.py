import copy

import pytest
import torch
from torch import fx, nn

from n2n_fx import TraceError, build_model, trace
from n2n_fx.errors import ConfigError
from n2n_fx.graph.shapes import META_KEY
from n2n_fx.teacher.trace import example_input_of, input_size_of, parse_input_size


def test_trace_by_name_has_shapes_on_every_tensor_node():
    gm = trace("resnet18", input_size=(3, 32, 32), num_classes=7)
    out = gm.graph.find_nodes(op="output")[0]
    assert out.meta[META_KEY].shape == (2, 7)
    for n in gm.graph.nodes:
        if n.op in ("call_module", "call_function"):
            assert isinstance(n.meta[META_KEY], torch.Tensor), n.name
            assert n.meta[META_KEY].device.type == "meta"
    assert input_size_of(gm) == (3, 32, 32)
    assert example_input_of(gm).shape == (2, 3, 32, 32)


def test_trace_module_does_not_mutate_teacher_and_matches_it():
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10).eval()
    before = copy.deepcopy(model.state_dict())
    gm = trace(model, input_size=(3, 32, 32)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(gm(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert model.training is not True  # untouched mode
    # the GraphModule owns copies: changing it leaves the teacher alone
    with torch.no_grad():
        gm.fc.weight.zero_()
    assert not torch.equal(model.fc.weight, gm.fc.weight)


def test_user_graphmodule_is_accepted():
    model = build_model("vgg11", num_classes=10)
    gm0 = fx.symbolic_trace(model)
    gm = trace(gm0, input_size=(3, 32, 32))
    assert gm is not gm0
    assert gm.graph.find_nodes(op="output")[0].meta[META_KEY].shape == (2, 10)


def test_in_channels_adaptation_for_grey_images():
    gm = trace("resnet18", input_size=(1, 28, 28))
    assert gm.conv1.in_channels == 1
    assert gm(torch.randn(2, 1, 28, 28)).shape == (2, 10)


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = _DataDependent()

    def forward(self, x):
        return self.inner(x)


class _DataDependent(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # control flow on a tensor: fx cannot trace this
            return x
        return -x


def test_untraceable_model_gives_one_line_error_naming_the_module():
    with pytest.raises(TraceError) as e:
        trace(_Branchy(), input_size=(3, 8, 8))
    msg = str(e.value)
    assert "\n" not in msg
    assert "inner" in msg and "leaf_modules" in msg


def test_leaf_modules_make_it_traceable():
    gm = trace(_Branchy(), input_size=(3, 8, 8), leaf_modules=[_DataDependent])
    assert any(n.op == "call_module" and n.target == "inner" for n in gm.graph.nodes)


@pytest.mark.parametrize("bad", ["3x", "axb", "0x32x32", ""])
def test_bad_input_size(bad):
    with pytest.raises(ConfigError):
        parse_input_size(bad)


def test_unknown_model_name():
    with pytest.raises(ConfigError, match="unknown model"):
        trace("resnet-18")
