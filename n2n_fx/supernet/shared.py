"""A weight-sharing teacher: every student the surgery can make is a gather of one weight vector.

The teacher's parameters are flattened into one vector ``flat`` (the shared weights).
A student is made by the ordinary surgery twice over: once on the teacher itself, which
takes every weight-dependent decision (L1 channel ranking, selections for removed layers)
from the *teacher's* weights — so the ranking is fixed once and a narrower student keeps a
subset of a wider one's channels — and once, replaying that plan (``apply_plan``), on a
copy of the teacher whose parameters hold their own positions in ``flat`` (integer codes
in float64; 0 and 1 stand for the zero/one padding the surgery inserts). The second pass
says, for every student parameter element, which shared weight it is: the student's
weights are ``flat[codes]``, and gradients of a sampled student flow back into ``flat``
through that gather.

Extraction is the same gather without gradients, so the student a search rewards is
exactly the student the supernet trained (tests/test_supernet.py checks it against the
surgery run on the shared weights directly).

Example:
    >>> from n2n_fx import trace
    >>> net = Supernet(trace("conv4", input_size=(1, 16, 16)))
    >>> arch = net.arch({"remove": ["features_3"]})
    >>> student = net.extract(arch)  # a GraphModule with the shared weights
    >>> sum(p.numel() for p in student.parameters()) < net.flat.numel()
    True
"""

from __future__ import annotations

import copy
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import fx, nn
from torch.func import functional_call

from ..errors import N2NError
from ..features.features import shrink_steps
from ..graph.layers import Analysis, analyze
from ..rewrite import Rewrite, apply_actions, apply_plan

__all__ = ["Supernet", "SharedArch", "SupernetError", "actions_key"]

_PAD = 2  # codes 0 and 1 are the constant pads; code k >= 2 is flat[k - 2]
_EXACT = 2**53  # float64 holds integers exactly up to here


class SupernetError(N2NError):
    """The supernet and a student extracted from it disagree (a surgery that is not a pure gather)."""


def actions_key(actions: Mapping[str, Any]) -> tuple:
    """A hashable key of ``{"remove": [...], "shrink": {node: {var: ratio}}}``."""
    remove = tuple(sorted(actions.get("remove") or ()))
    shrink = tuple(
        sorted(
            (node, tuple(sorted(spec.items())) if isinstance(spec, Mapping) else (("out", float(spec)),))
            for node, spec in (actions.get("shrink") or {}).items()
        )
    )
    return remove, shrink


@dataclass
class SharedArch:
    """One student architecture of the supernet."""

    rewrite: Rewrite  # the surgery on the teacher (student with the teacher's weights, diff, plan)
    codes: dict[str, torch.Tensor]  # student parameter name -> int codes into the padded shared vector
    removal: Rewrite | None = None  # for a remove-then-shrink student: the removal part

    @property
    def valid(self) -> bool:
        return self.rewrite.valid

    @property
    def size(self) -> int:
        """Student weights this record holds (for cache accounting)."""
        return sum(c.numel() for c in self.codes.values())

    @property
    def template(self) -> fx.GraphModule:
        assert self.rewrite.student is not None
        return self.rewrite.student


class Supernet(nn.Module):
    """The shared weights of every student of ``teacher`` (a traced GraphModule, left untouched)."""

    def __init__(
        self, teacher: fx.GraphModule, *, max_linear_growth: float = 8.0, cache_elements: int = 50_000_000
    ) -> None:
        super().__init__()
        self.max_linear_growth = max_linear_growth
        # student weights each of the two caches may hold (architectures: int32 codes and a float32 template;
        # removals: float32 weights and float64 codes): about 400 and 600 MB at the default
        self.cache_elements = cache_elements
        teacher = teacher.eval()
        object.__setattr__(self, "teacher", teacher)  # not a submodule: never trained, never saved
        named = list(teacher.named_parameters())
        total = sum(p.numel() for _, p in named)
        if total + _PAD >= _EXACT:
            raise SupernetError(f"the teacher has {total} parameters, too many to index in float64")
        self.flat = nn.Parameter(torch.cat([p.detach().reshape(-1).float() for _, p in named]))
        coded = copy.deepcopy(teacher)
        offset = _PAD
        for name, p in named:
            mod_path, _, attr = name.rpartition(".")
            mod = coded.get_submodule(mod_path) if mod_path else coded
            code = torch.arange(offset, offset + p.numel(), dtype=torch.float64).reshape(p.shape)
            mod._parameters[attr] = nn.Parameter(code, requires_grad=p.requires_grad)
            offset += p.numel()
        self._teacher_padded = self._padded(self.teacher_flat())  # fixed: the teacher never changes
        self._code_dtype = torch.int32 if total + _PAD < 2**31 else torch.long
        self._analysis = analyze(teacher)
        self._coded = replace(self._analysis, gm=coded)  # same structure, same analysis, other weights
        self._cache = _Bounded(cache_elements, lambda a: a.size)  # actions -> SharedArch
        # removal -> (rewrite, coded rewrite, analyses): two copies of the student's weights each
        self._stage1 = _Bounded(cache_elements, lambda entry: _weights(entry[0].student))

    @property
    def analysis(self) -> Analysis:
        """The teacher's analysis (layers and legal actions of the removal stage)."""
        return self._analysis

    def stage1_analysis(self, remove: Sequence[str]) -> Analysis:
        """The analysis of the student after removing ``remove`` (the shrink stage's layers)."""
        return self._removal(tuple(sorted(remove)))[2]

    # -- architectures -------------------------------------------------------------------------
    def arch(self, actions: Mapping[str, Any]) -> SharedArch:
        """The student of ``{"remove": [...], "shrink": {...}}``: remove on the teacher, then shrink.

        Shrink names refer to layers of the student after removal (as in the search's stage 2).
        Illegal actions are ignored, as in the search. Results are cached per action set."""
        key = actions_key(actions)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        remove, shrink = list(key[0]), {n: dict(v) for n, v in key[1]}
        rw, coded, analysis, coded_analysis = self._removal(tuple(remove))
        removal = None
        if not shrink and rw.valid:  # its own template: training moves it, surgery reads the cached one
            rw = replace(rw, student=copy.deepcopy(rw.student))
        if shrink and rw.valid:
            removal = rw
            rw = apply_actions(analysis, shrink=shrink, strict=False, max_linear_growth=self.max_linear_growth)
            rw.diff = removal.diff.then(rw.diff)
            rw.teacher_cost = removal.teacher_cost
            if rw.valid:
                coded = apply_plan(coded_analysis, rw.plan, max_linear_growth=self.max_linear_growth)
        codes = self._codes(rw, coded) if rw.valid else {}
        arch = SharedArch(rw, codes, removal)
        self._cache.put(key, arch)
        return arch

    def _removal(self, remove: tuple[str, ...]) -> tuple[Rewrite, Rewrite, Analysis, Analysis]:
        """Removal on the teacher and on the coded copy, with the analyses shrink needs (cached)."""
        hit = self._stage1.get(remove)
        if hit is not None:
            return hit
        rw = apply_actions(self._analysis, remove=remove, strict=False, max_linear_growth=self.max_linear_growth)
        if not rw.valid:
            return rw, rw, self._analysis, self._coded
        coded = apply_plan(self._coded, rw.plan, max_linear_growth=self.max_linear_growth)
        if not coded.valid:
            raise SupernetError(f"replaying a valid removal on the coded teacher failed: {coded.degenerate}")
        analysis = analyze(rw.student)
        out = (rw, coded, analysis, replace(analysis, gm=coded.student))
        # bounded by the weights held, not by count: 64 removals of vgg13_small held 5 GB
        self._stage1.put(remove, out)
        return out

    def _codes(self, rw: Rewrite, coded: Rewrite) -> dict[str, torch.Tensor]:
        """Student parameter name -> long codes, checked: the teacher's weights at those codes are
        exactly the teacher-surgery student's weights."""
        if not coded.valid:
            raise SupernetError(f"replaying a valid rewrite on the coded teacher failed: {coded.degenerate}")
        coded_params = dict(coded.student.named_parameters())
        padded = self._teacher_padded
        codes: dict[str, torch.Tensor] = {}
        for name, p in rw.student.named_parameters():
            c = coded_params.get(name)
            if c is None or c.shape != p.shape:
                raise SupernetError(f"student parameter {name} has no counterpart in the coded student")
            idx = c.detach().long()
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= padded.numel()):
                raise SupernetError(f"student parameter {name} is not a gather of teacher weights")
            # one exact comparison catches codes that are not whole numbers or point elsewhere
            if not torch.equal(padded[idx], p.detach().float()):
                raise SupernetError(f"student parameter {name} is not the gather of teacher weights its codes say")
            codes[name] = idx.to(self._code_dtype)
        return codes

    # -- weights ---------------------------------------------------------------------------------
    def teacher_flat(self) -> torch.Tensor:
        """The teacher's own weights in the layout of ``flat``."""
        return torch.cat([p.detach().reshape(-1).float() for p in self.teacher.parameters()])

    def digest(self) -> str:
        """A SHA-1 of the shared weights as they are now (which training a saved state belongs to)."""
        return hashlib.sha1(self.flat.detach().cpu().numpy().tobytes()).hexdigest()

    def _padded(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.cat([flat.new_zeros(1), flat.new_ones(1), flat])

    def weights(self, arch: SharedArch) -> dict[str, torch.Tensor]:
        """The student's parameters as a differentiable gather of the shared weights."""
        padded = self._padded(self.flat)
        return {name: padded[idx] for name, idx in arch.codes.items()}

    def forward_student(self, arch: SharedArch, x: torch.Tensor) -> torch.Tensor:
        """Run a student with the shared weights; gradients reach ``flat``."""
        return functional_call(arch.template, self.weights(arch), (x,), strict=False)

    def extract(self, arch: SharedArch, *, teacher_weights: bool = False) -> fx.GraphModule:
        """A standalone copy of the student with the current shared weights (buffers: the teacher's).

        ``teacher_weights``: with the teacher's own weights instead, as plain surgery gives them."""
        if not arch.valid:
            raise SupernetError(f"cannot extract a degenerate student ({arch.rewrite.degenerate})")
        student = copy.deepcopy(arch.template)
        source = self._teacher_padded if teacher_weights else self._padded(self.flat.detach())
        with torch.no_grad():
            for name, idx in arch.codes.items():
                mod_path, _, attr = name.rpartition(".")
                mod = student.get_submodule(mod_path) if mod_path else student
                mod._parameters[attr] = nn.Parameter(source[idx], mod._parameters[attr].requires_grad)
        return student

    def shared_teacher(self) -> fx.GraphModule:
        """The teacher's graph holding the shared weights (for surgery on it directly)."""
        gm = copy.deepcopy(self.teacher)
        offset = 0
        with torch.no_grad():
            for p in gm.parameters():
                p.copy_(self.flat[offset : offset + p.numel()].reshape(p.shape))
                offset += p.numel()
        return gm

    def load_flat(self, flat: torch.Tensor) -> None:
        if flat.shape != self.flat.shape:
            raise SupernetError(
                f"saved supernet weights have shape {tuple(flat.shape)}, expected {tuple(self.flat.shape)}"
            )
        with torch.no_grad():
            self.flat.copy_(flat)


def _weights(gm: nn.Module) -> int:
    return sum(p.numel() for p in gm.parameters())


class _Bounded:
    """A least-recently-used cache holding at most ``budget`` student weights (``size(entry)`` each);
    the newest entry stays whatever its size."""

    def __init__(self, budget: int, size: Callable[[Any], int]) -> None:
        self.budget, self.size = budget, size
        self.held = 0  # student weights held now
        self._entries: OrderedDict[tuple, Any] = OrderedDict()

    def get(self, key: tuple) -> Any:
        hit = self._entries.get(key)
        if hit is not None:
            self._entries.move_to_end(key)
        return hit

    def put(self, key: tuple, entry: Any) -> None:
        self._entries[key] = entry
        self.held += self.size(entry)
        while self.held > self.budget and len(self._entries) > 1:
            self.held -= self.size(self._entries.popitem(last=False)[1])

    def values(self):
        return self._entries.values()

    def __len__(self) -> int:
        return len(self._entries)


def smallest_actions(
    analysis: Analysis, ratios: Sequence[float], floor: float = 0.0, *, kernels: bool = True
) -> dict[str, Any]:
    """Every shrinkable variable at its smallest legal ratio >= ``floor``, no layer removed (the narrowest
    student); ``kernels=False``: kernel sizes kept (the channels-only shrink space)."""
    shrink: dict[str, dict[str, float]] = {}
    for step in shrink_steps(analysis.layers, ratios, kernels=kernels):
        legal = [r for r, ok in zip(ratios, step.legal, strict=True) if ok and r >= floor - 1e-9]
        if legal:
            shrink.setdefault(step.node, {})[step.variable] = min(legal)
    return {"remove": [], "shrink": shrink}
