"""Which student is shipped under an accuracy tolerance: the search's best first, then, while the
trained student loses more validation accuracy than ``max_accuracy_drop`` allows, the best-rewarded
of the students the search read as more accurate than the last one tried.

The paper's reward trades accuracy for size at a fixed rate (C(2 − C)·A/A_teacher): on the built-in
data it prefers an 8.8× student 1.35 points below the teacher to a 6.7× one within 0.1 point. A user
who can afford one point says so once; the search and its reward stay the paper's, and the final
phase walks back along the students the search scored until one trains to within the tolerance
(validation split: the test split never chooses anything).

Pure functions over history rows (``history.jsonl``); ``final.FinalTraining`` trains the picks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..supernet import actions_key

__all__ = ["next_candidate", "pick", "ranked_candidates", "within"]


def ranked_candidates(
    rows: Iterable[Mapping[str, Any]], full_actions: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The students the search scored in the stages of ``full_actions`` (stage -> the actions its rows
    extend: ``{"remove": [...]}``), valid and within every constraint, each once, best reward first
    (ties: the earlier one). Each: ``stage``, ``actions`` (from the teacher), ``reward``, ``accuracy``
    (the search's reading), ``params``.

    Example:
        >>> rows = [
        ...     {"stage": "shrink", "actions": {"a": 0.5}, "reward": 0.8, "accuracy": 0.9, "params": 5,
        ...      "degenerate": None, "violations": []},
        ...     {"stage": "shrink", "actions": {"a": 0.75}, "reward": 0.7, "accuracy": 0.95, "params": 8,
        ...      "degenerate": None, "violations": []},
        ...     {"stage": "shrink", "actions": {"a": 0.5}, "reward": 0.8, "accuracy": 0.9, "params": 5,
        ...      "degenerate": None, "violations": []},
        ... ]
        >>> [c["actions"] for c in ranked_candidates(rows, {"shrink": {"remove": ["x"]}})]
        [{'remove': ['x'], 'shrink': {'a': 0.5}}, {'remove': ['x'], 'shrink': {'a': 0.75}}]
    """
    seen: set[str] = set()
    out = []
    for row in rows:
        base = full_actions.get(row["stage"])
        if base is None or row.get("degenerate") or row.get("violations"):
            continue
        acc, reward = row.get("accuracy"), row.get("reward")
        if acc is None or reward is None or not (math.isfinite(acc) and math.isfinite(reward)):
            continue
        part = {"remove": row["actions"]} if row["stage"] == "removal" else {"shrink": row["actions"]}
        actions = {**base, **part}
        key = actions_key(actions)
        if key in seen:
            continue
        seen.add(key)
        out.append(
            {"stage": row["stage"], "actions": actions, "reward": reward, "accuracy": acc, "params": row["params"]}
        )
    return sorted(out, key=lambda c: -c["reward"])  # stable: equals keep the search's order


def next_candidate(ranked: Sequence[Mapping[str, Any]], tried: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The next student to train after ``tried`` (each with its ``actions`` and the search's reading
    ``accuracy``) fell outside the tolerance: the best-rewarded untried one the search read as more
    accurate than the last one tried; None when there is none.

    Example:
        >>> ranked = [{"actions": {"shrink": {"a": {"out": 0.3}}}, "reward": 0.9, "accuracy": 0.95},
        ...           {"actions": {"shrink": {"a": {"out": 0.5}}}, "reward": 0.8, "accuracy": 0.94},
        ...           {"actions": {"shrink": {"a": {"out": 0.7}}}, "reward": 0.7, "accuracy": 0.97}]
        >>> next_candidate(ranked, [ranked[0]])["actions"]
        {'shrink': {'a': {'out': 0.7}}}
        >>> next_candidate(ranked, [ranked[2]]) is None
        True
    """
    done = {actions_key(t["actions"]) for t in tried}
    floor = tried[-1]["accuracy"] if tried else -math.inf
    for c in ranked:
        if actions_key(c["actions"]) not in done and c["accuracy"] > floor:
            return dict(c)
    return None


def within(teacher_val: float, student_val: float, max_drop: float | None) -> bool:
    """Whether a trained student's validation accuracy is within ``max_drop`` points of the teacher's
    (None: no tolerance, every student is).

    Example:
        >>> within(0.98, 0.9705, 1.0), within(0.98, 0.9695, 1.0), within(0.98, 0.5, None)
        (True, False, True)
    """
    return max_drop is None or 100.0 * (teacher_val - student_val) <= max_drop + 1e-9


def pick(tried: Sequence[Mapping[str, Any]], teacher_val: float, max_drop: float | None) -> int:
    """Index of the student to ship among the trained ``tried`` (each with ``val_accuracy``): the first
    within the tolerance (the most compressed side of the walk), else the most accurate on validation.

    Example:
        >>> pick([{"val_accuracy": 0.96}, {"val_accuracy": 0.975}], 0.98, 1.0)
        1
        >>> pick([{"val_accuracy": 0.96}, {"val_accuracy": 0.965}], 0.98, 1.0)
        1
    """
    if not tried:
        raise ValueError("no trained student to pick from")
    for i, t in enumerate(tried):
        if within(teacher_val, t["val_accuracy"], max_drop):
            return i
    return max(range(len(tried)), key=lambda i: tried[i]["val_accuracy"])
