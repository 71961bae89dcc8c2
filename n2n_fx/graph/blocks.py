"""Residual and multi-branch structure: blocks between a fork and a join, and s_start/s_end.

A *join* is an op that merges two or more data-dependent tensors (add, mul, cat, ...); its
*fork* is the join's immediate dominator in the data-flow graph (where the branches
split). A block's members are the nodes on some path fork -> join. For a layer inside a
block, ``s_start`` is the number of layers on the longest path from the fork down to and
including the layer, ``s_end`` the number from the layer down to the join (paper §3.2.1);
both are 0 outside blocks. Blocks nest (a squeeze-excitation inside an inverted
residual); a layer takes the values of its innermost block (the one with fewest members).
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import torch
from torch import fx

from .channels import is_cat, is_join
from .kinds import kind_of
from .shapes import META_KEY

__all__ = ["Block", "to_networkx", "find_blocks", "skip_positions"]

_SOURCE = "__source__"


@dataclass(frozen=True)
class Block:
    """A fork -> join region with at least two branches."""

    fork: str  # node where the branches split
    join: str  # node where they merge (add, mul, cat, ...)
    members: frozenset[str]  # nodes strictly between fork and join on some path
    layers: tuple[str, ...]  # members that are layers, in graph order


def to_networkx(gm: fx.GraphModule) -> nx.DiGraph:
    """The data-flow graph of ``gm``: one vertex per node (name), edges producer -> user.

    Vertex attributes: ``op``, ``target``, ``shape`` (output shape or None).
    """
    g = nx.DiGraph()
    for node in gm.graph.nodes:
        val = node.meta.get(META_KEY)
        shape = tuple(val.shape) if isinstance(val, torch.Tensor) else None
        g.add_node(node.name, op=node.op, target=str(node.target), shape=shape)
        for a in node.all_input_nodes:
            g.add_edge(a.name, node.name)
    return g


def _data_nodes(gm: fx.GraphModule) -> set[str]:
    """Nodes whose value depends on a model input."""
    dep: set[str] = set()
    for node in gm.graph.nodes:
        if node.op == "placeholder" or any(a.name in dep for a in node.all_input_nodes):
            dep.add(node.name)
    return dep


def find_blocks(gm: fx.GraphModule) -> list[Block]:
    """Every fork/join block of the graph, in graph order of the joins."""
    data = _data_nodes(gm)
    g = nx.DiGraph()
    g.add_node(_SOURCE)
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        if node.name not in data:
            continue
        g.add_node(node.name)
        if node.op == "placeholder":
            g.add_edge(_SOURCE, node.name)
        for a in node.all_input_nodes:
            if a.name in data:
                g.add_edge(a.name, node.name)
    idom = nx.immediate_dominators(g, _SOURCE)
    layer_names = {n.name for n in gm.graph.nodes if kind_of(gm, n) is not None}
    blocks = []
    for node in gm.graph.nodes:
        if node.name not in data or not (is_join(node) or is_cat(node)):
            continue
        operands = {a.name for a in node.all_input_nodes if a.name in data}
        if len(operands) < 2:
            continue
        fork = idom.get(node.name)
        if fork is None or fork == _SOURCE:
            continue
        members = (nx.descendants(g, fork) & nx.ancestors(g, node.name)) - {fork, node.name}
        layers = tuple(sorted((m for m in members if m in layer_names), key=order.__getitem__))
        blocks.append(Block(fork, node.name, frozenset(members), layers))
    return blocks


def skip_positions(gm: fx.GraphModule, blocks: list[Block] | None = None) -> dict[str, tuple[int, int]]:
    """(s_start, s_end) for every layer node inside a block, from its innermost block."""
    if blocks is None:
        blocks = find_blocks(gm)
    nodes = {n.name: n for n in gm.graph.nodes}
    layer_names = {n.name for n in gm.graph.nodes if kind_of(gm, n) is not None}
    order = {n.name: i for i, n in enumerate(gm.graph.nodes)}
    best: dict[str, tuple[int, int, int]] = {}  # layer -> (block size, s_start, s_end)
    for b in blocks:
        inside = sorted(b.members, key=order.__getitem__)
        down: dict[str, int] = {}  # layers on longest path fork -> node (inclusive)
        for name in inside:
            prev = [down[a.name] for a in nodes[name].all_input_nodes if a.name in down]
            down[name] = max(prev, default=0) + (name in layer_names)
        up: dict[str, int] = {}  # layers on longest path node -> join (inclusive)
        for name in reversed(inside):
            nxt = [up[u.name] for u in nodes[name].users if u.name in up]
            up[name] = max(nxt, default=0) + (name in layer_names)
        size = len(b.members)
        for name in b.layers:
            if name not in best or size < best[name][0]:
                best[name] = (size, down[name], up[name])
    return {k: (v[1], v[2]) for k, v in best.items()}
