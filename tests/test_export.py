"""Export of every valid student (torch.export .pt2, ONNX with inserted pooling; batch size dynamic) and runs of a
user's own model from the CLI."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _cli import one_line_error
from torch import fx, nn

from n2n_fx.cli import main
from n2n_fx.errors import CheckpointError, ConfigError
from n2n_fx.export import BATCH, FixedAdaptiveAvgPool, export_onnx, export_student, fix_adaptive_pools
from n2n_fx.rewrite import apply_actions
from n2n_fx.search import load_run
from n2n_fx.teacher.fxfile import graph_from_state, graph_to_state
from n2n_fx.teacher.trace import trace

HAS_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxscript") is not None


class Residual(nn.Module):
    """Two stride-2 stages with residual adds: removing a downsampling conv makes surgery pool 5x5 -> 3x3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.a_skip = nn.Conv2d(8, 8, 1, stride=2)
        self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.b_skip = nn.Conv2d(8, 16, 1, stride=2)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.stem(x))
        x = F.relu(self.a(x) + self.a_skip(x))
        x = F.relu(self.b(x) + self.b_skip(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def pooled_student() -> fx.GraphModule:
    torch.manual_seed(0)
    teacher = trace(Residual().eval(), input_size=(1, 10, 10))
    r = apply_actions(teacher, remove=["b"], strict=False)
    assert r.valid and any("pool" in why for why in r.diff.inserted.values()), r.diff.inserted
    return r.student.eval()


@pytest.mark.parametrize(
    ("size_in", "size_out"), [((5, 5), (3, 3)), ((10, 7), (5, 2)), ((9,), (4,)), ((4, 6, 5), (3, 3, 2))]
)
def test_fixed_pool_equals_adaptive_pool(size_in, size_out):
    x = torch.randn(2, 3, *size_in)
    fn = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}[len(size_in)]
    torch.testing.assert_close(FixedAdaptiveAvgPool(size_in, size_out)(x), fn(x, size_out))


def test_fix_adaptive_pools_is_exact_and_leaves_the_student_alone(pooled_student):
    before = pooled_student.code
    x = torch.randn(3, 1, 10, 10)
    fixed = fix_adaptive_pools(pooled_student, x[:1])
    assert pooled_student.code == before  # not mutated
    assert not any(n.target is F.adaptive_avg_pool2d and n.args[1] != 1 for n in fixed.graph.nodes)
    assert any(isinstance(m, FixedAdaptiveAvgPool) for m in fixed.modules())
    torch.testing.assert_close(fixed(x), pooled_student(x))


def test_pt2_round_trip_gives_the_same_outputs_at_any_batch_size(pooled_student, tmp_path):
    pooled_student.train()  # exported in eval mode; the student's own mode is left alone
    path = export_student(pooled_student, tmp_path / "s.pt2", example_input=torch.randn(1, 1, 10, 10))
    assert pooled_student.training
    pooled_student.eval()
    program = torch.export.load(path)
    (name,) = program.graph_signature.user_inputs
    node = next(n for n in program.graph.nodes if n.name == name)
    assert isinstance(node.meta["val"].shape[0], torch.SymInt)  # symbolic, not the example's batch size
    run = program.module()
    for b in (1, 3):
        x = torch.randn(b, 1, 10, 10)
        torch.testing.assert_close(run(x), pooled_student(x), rtol=0, atol=1e-6)


def test_export_refuses_torchscript_and_unknown_formats_in_one_line(pooled_student, tmp_path):
    with pytest.raises(ConfigError, match=r"torch.jit.trace is deprecated\); use pt2"):
        export_student(pooled_student, tmp_path / "s.pt", "torchscript")
    with pytest.raises(ConfigError, match="use one of pt2, onnx, fx"):
        export_student(pooled_student, tmp_path / "s.x", "tflite")
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not HAS_ONNX, reason="onnx / onnxscript not installed (pip install 'n2n-fx[onnx]')")
def test_onnx_export_of_a_student_with_inserted_pooling(pooled_student, tmp_path):
    import onnx
    from onnx.reference import ReferenceEvaluator

    path = export_onnx(pooled_student, tmp_path / "s.onnx", torch.randn(1, 1, 10, 10))
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for value in (model.graph.input[0], model.graph.output[0]):  # the batch dimension is symbolic
        dim = value.type.tensor_type.shape.dim[0]
        assert dim.dim_param == BATCH and not dim.HasField("dim_value"), value
    for b in (1, 3):
        batch = torch.randn(b, 1, 10, 10)
        (out,) = ReferenceEvaluator(model).run(None, {"input": batch.numpy()})
        torch.testing.assert_close(torch.from_numpy(out), pooled_student(batch), rtol=1e-4, atol=1e-5)


# -- a user's own model: stored as a graph ---------------------------------------------------------
def test_graph_file_round_trip_without_the_class():
    torch.manual_seed(0)
    gm = trace(Residual().eval(), input_size=(1, 10, 10))
    buf = io.BytesIO()
    torch.save(graph_to_state(gm), buf)
    buf.seek(0)
    back = graph_from_state(torch.load(buf, weights_only=True))  # no pickled code
    x = torch.randn(2, 1, 10, 10)
    assert torch.equal(back(x), gm(x))
    assert [n.name for n in back.graph.nodes] == [n.name for n in gm.graph.nodes]
    assert not any(type(m) is Residual for m in back.modules())


def test_graph_file_refuses_functions_outside_torch():
    gm = trace(Residual().eval(), input_size=(1, 10, 10))
    state = graph_to_state(gm)
    node = next(n for n in state["nodes"] if n["op"] == "call_function")
    node["target"] = "os.system"
    with pytest.raises(CheckpointError, match="os.system"):
        graph_from_state(state)


_SCRIPT = """
import torch
from torch import nn
from n2n_fx.data import load_splits
from n2n_fx.search import compress

class DigitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(8, 8, 1, stride=2)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = torch.relu(self.c2(x) + self.skip(x))
        return self.fc(x.mean((2, 3)))

torch.manual_seed(0)
s = load_splits("synthetic", num_samples=200, image_size=10)
compress(DigitNet(), s.train_plain, s.val, s.test, run_dir=RUN, removal_iterations=1, shrink_iterations=1,
         rollouts=2, reward_steps=2, final_epochs=1, reward_accuracy="ratio")  # untrained: at chance
"""


def test_a_python_api_run_is_usable_from_the_command_line(tmp_path, capsys):
    run = tmp_path / "run"
    script = tmp_path / "user_script.py"
    script.write_text(f"RUN = {str(run)!r}\n" + textwrap.dedent(_SCRIPT))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "timing.json").is_file()
    # DigitNet exists only in that script; this process has never seen it
    assert main(["diff", str(run)]) == 0
    assert main(["export", str(run), "--format", "fx", "--out", str(tmp_path / "fx")]) == 0
    assert (tmp_path / "fx" / "module.py").is_file()
    assert main(["export", str(run)]) == 0  # the default: a torch.export program
    run_program = torch.export.load(run / "student.pt2").module()
    student, _ = load_run(run)
    x = torch.randn(3, 1, 10, 10)
    torch.testing.assert_close(run_program(x), student.eval()(x), rtol=0, atol=1e-6)
    capsys.readouterr()
    one_line_error(capsys, ["export", str(run), "--format", "torchscript"], "deprecated", "pt2")
    if HAS_ONNX:
        assert main(["export", str(run), "--format", "onnx"]) == 0
        assert (run / "student.onnx").is_file()
    capsys.readouterr()


def test_a_pickle_of_a_class_that_is_gone_is_not_called_corrupt(tmp_path, monkeypatch):
    import types

    from n2n_fx.rundir import safe_torch_load

    mod = types.ModuleType("gone_user_module")

    class DigitNet(nn.Module):
        pass

    DigitNet.__module__, DigitNet.__qualname__ = "gone_user_module", "DigitNet"
    mod.DigitNet = DigitNet
    monkeypatch.setitem(sys.modules, "gone_user_module", mod)
    torch.save({"module": DigitNet()}, tmp_path / "teacher.pt")
    monkeypatch.delitem(sys.modules, "gone_user_module")
    with pytest.raises(CheckpointError) as e:
        safe_torch_load(tmp_path / "teacher.pt", allow_pickle=True)
    msg = str(e.value)
    assert "corrupt" not in msg and "your own class" in msg and "\n" not in msg
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        safe_torch_load(tmp_path / "junk.pt")
