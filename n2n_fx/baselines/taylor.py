"""The Taylor criterion (Molchanov et al. 2016): which channels of which spaces pruning may remove.

Θ(z) = |mean over positions of activation × ∂loss/∂activation|, averaged over a few
batches, summed over the tensors of a channel space that leave it, L2-normalised per space.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx

from ..data.loaders import make_loader
from ..errors import ConfigError
from ..graph.channels import ChannelClass
from ..graph.layers import Analysis, analyze
from ..progress import progress_bar

__all__ = ["prunable_spaces", "taylor_scores"]


def prunable_spaces(analysis: Analysis) -> dict[int, tuple[ChannelClass, str]]:
    """Shrinkable channel spaces by root id, with the layer that owns their output channels.

    Spaces of grouped convs (channels kept evenly per group) are left out.

    Example:
        >>> from n2n_fx import trace
        >>> spaces = prunable_spaces(analyze(trace("conv4", input_size=(1, 16, 16))))
        >>> sorted((owner, cls.size) for cls, owner in spaces.values())
        [('classifier_1', 128), ('features_0', 32), ('features_10', 64), ('features_3', 32), ('features_7', 64)]
    """
    out: dict[int, tuple[ChannelClass, str]] = {}
    for lay in analysis.layers:
        if "out" not in lay.shrinkable:
            continue
        cls = analysis.spaces.class_of(lay.node)
        if cls is not None and cls.shrinkable and cls.groups == 1 and cls.root not in out:
            out[cls.root] = (cls, lay.node)
    return out


class _Capture(fx.Interpreter):
    """Runs a GraphModule and keeps the outputs of the named nodes (autograd graph intact)."""

    def __init__(self, gm: fx.GraphModule, names: set[str]) -> None:
        super().__init__(gm)
        self.names = names
        self.values: dict[str, torch.Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.names and isinstance(out, torch.Tensor) and out.requires_grad:
            self.values[n.name] = out
        return out


def _exits(analysis: Analysis, spaces: dict[int, tuple[ChannelClass, str]]) -> dict[str, tuple]:
    """Member tensors of each space read by a node outside it: node -> (root, channel dim)."""
    nodes = {n.name: n for n in analysis.gm.graph.nodes}
    out: dict[str, tuple[int, int]] = {}
    for root, (cls, _) in spaces.items():
        members = set(cls.members)
        for name in cls.members:
            info = analysis.spaces.info.get(name)
            node = nodes.get(name)
            if node is None or info is None or info.dim is None:
                continue
            if any(u.name not in members for u in node.users):
                out[name] = (root, info.dim)
    return out


def taylor_scores(
    gm: fx.GraphModule,
    data,
    *,
    batches: int = 4,
    batch_size: int = 64,
    device: str = "cpu",
    seed: int = 0,
    analysis: Analysis | None = None,
) -> dict[int, torch.Tensor]:
    """Taylor importance of every channel of every prunable space: root -> ``(size,)`` scores.

    For each tensor of a space that leaves it (feeds a conv, linear, flatten, ...), the
    per-sample |mean over positions of a·∂CE/∂a| is averaged over ``batches`` batches of
    ``data``; a space's score sums its tensors' and is L2-normalised (Molchanov et al.).
    The model runs in eval mode on a copy; ``gm`` is not changed.

    Example:
        >>> from n2n_fx import trace
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=200, image_size=16)
        >>> gm = trace("conv4", input_size=(1, 16, 16))
        >>> scores = taylor_scores(gm, splits.train_plain, batches=2, batch_size=32)
        >>> sorted(tuple(s.shape) for s in scores.values())  # one score per channel of each space
        [(32,), (32,), (64,), (64,), (128,)]
    """
    analysis = analysis or analyze(gm)
    spaces = prunable_spaces(analysis)
    exits = _exits(analysis, spaces)
    if not exits:  # nothing prunable is left (every space at its last channels)
        return {root: torch.zeros(int(cls.size)) for root, (cls, _) in spaces.items()}
    model = copy.deepcopy(gm).to(device).eval()
    for mod in model.modules():
        if getattr(mod, "inplace", False) is True:
            mod.inplace = False  # an in-place op would overwrite a captured activation
    for p in model.parameters():
        p.requires_grad_(True)
    sums = {name: torch.zeros(int(spaces[r][0].size)) for name, (r, _) in exits.items()}
    seen = 0
    loader = make_loader(data, batch_size, shuffle=True, seed=seed, device=device)
    bar = progress_bar(min(batches, len(loader)), "taylor scores (batches)")
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        x, y = batch[0].to(device), batch[1].to(device)
        cap = _Capture(model, set(exits))
        loss = F.cross_entropy(cap.run(x), y)
        names = [n for n in exits if n in cap.values]
        if not names:
            raise ConfigError("no prunable activation depends on a trainable parameter")
        grads = torch.autograd.grad(loss, [cap.values[n] for n in names], allow_unused=True)
        for name, g in zip(names, grads, strict=True):
            if g is None:
                continue
            root, dim = exits[name]
            prod = (cap.values[name].detach() * g).movedim(dim, 1)  # (N, C', ...)
            # (N, C, positions); after a flatten, channel c owns a run of C'/C features
            per_sample = prod.reshape(prod.shape[0], int(spaces[root][0].size), -1).mean(dim=2)  # (N, C)
            sums[name] += per_sample.abs().sum(dim=0).float().cpu()
        seen += int(x.shape[0])
        bar.update(1)
    bar.close()
    if seen == 0:
        raise ConfigError("no data to score channels on; give a non-empty training split")
    scores = {root: torch.zeros(int(cls.size)) for root, (cls, _) in spaces.items()}
    for name, (root, _) in exits.items():
        scores[root] += sums[name] / seen
    for root, s in scores.items():
        norm = torch.linalg.vector_norm(s)
        if norm > 0:
            scores[root] = s / norm
    return scores
