"""The shared weights a stage scores its students with (shared reward modes): trained once per
stage and run, saved in the run directory, loaded (and checked) on resume."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..distill import LogitCache
from ..errors import CheckpointError
from ..progress import progress_bar
from ..rundir import safe_torch_load
from ..storage import atomic_torch_save
from ..supernet import Supernet, train_supernet

__all__ = ["SUPERNET_FILES", "SUPERNET_FORMAT", "SharedWeights"]

logger = logging.getLogger(__name__)

SUPERNET_FORMAT = "n2n_fx.supernet/2"
SUPERNET_FILES = {  # shared weights per stage
    "removal": "supernet.pt",
    "shrink": "supernet_shrink.pt",
    "shrink_teacher": "supernet_shrink_teacher.pt",
}


def _tag(net: Supernet) -> str:
    """A short hash of the shared weights: rewards cached for one supernet never serve another."""
    return net.digest()[:16]


class SharedWeights:
    """``Search``'s supernet per stage (a mixin: it reads the search's config, state and run directory)."""

    def _saved_supernet(self, space: str) -> Supernet:
        """The shared weights stage ``space`` trained, loaded from the run directory and checked."""
        path = self.run_dir.file(SUPERNET_FILES[space])
        record = self.state.supernet.get(space)
        if not record or not path.is_file():
            raise CheckpointError(f"{path} is missing: the run's {space} shared weights are gone; delete the run")
        saved = safe_torch_load(path)
        if not isinstance(saved, dict) or saved.get("format") != SUPERNET_FORMAT:
            raise CheckpointError(f"{path} is not a supernet checkpoint of this version; delete the run")
        net = Supernet(self.teacher, max_linear_growth=self.cfg.max_linear_growth)
        net.load_flat(saved["flat"])
        if _tag(net) != record.get("tag"):
            raise CheckpointError(f"{path} does not hold the weights this run trained; delete the run and start again")
        logger.info(f"supernet ({space}): loaded ({record['steps']} steps, {record['wall_s']:.0f} s)")
        return net

    def _supernet(self, train, cache: LogitCache, space: str, remove: Sequence[str] = ()) -> Supernet:
        """The shared weights stage ``space`` scores its students with: loaded from the run
        directory, or trained once and saved there (``SUPERNET_FILES``).

        Stage 1's are trained from the teacher over removals; stage 2's go on from stage 1's over
        the shrinks of stage 1's winner ``remove`` (from the teacher when stage 1 did not run).
        Training time is part of the search time (``state.supernet[space]["wall_s"]``)."""
        path = self.run_dir.file(SUPERNET_FILES[space])
        record = self.state.supernet.get(space)
        if record and path.is_file():
            return self._saved_supernet(space)
        net = None
        if space != "removal" and record is None and "removal" in self.state.supernet:  # go on from stage 1's
            keep = space == "shrink" and self.supernet is not None  # stage 1's, still in memory
            net = self.supernet if keep else self._supernet(train, cache, "removal")
        if net is None:
            net = Supernet(self.teacher, max_linear_growth=self.cfg.max_linear_growth)
        kind = "removal" if space == "removal" else "shrink"  # both shrink stages train over shrinks
        prior = self.remove_prior() if kind == "removal" else None  # shrink students remove nothing
        bias = None
        if kind == "shrink" and self.cfg.max_params is not None:  # drawn where the stage's policy starts
            bias = self.keep_bias(space, net.stage1_analysis(sorted(remove)) if remove else net.analysis)
        scfg = self.cfg.supernet_config(kind, prior, bias)
        what = "removals" if space == "removal" else f"shrinks of the {'stage-1 winner' if remove else 'teacher'}"
        logger.info(
            f"supernet: training shared weights over {what} ({scfg.steps} steps, {2 + scfg.random_students} students a step)"
        )
        # a training killed before it ended left its progress here: it goes on from there
        progress = self.run_dir.file(SUPERNET_FILES[space].replace(".pt", ".progress.pt"))
        bar = progress_bar(scfg.steps, f"supernet {space} (steps)")
        res = train_supernet(
            net,
            train,
            cache,
            scfg,
            space=kind,
            remove=remove,
            device=self.device,
            on_step=lambda *_: bar.update(1),
            checkpoint=progress,
            checkpoint_every=self.cfg.supernet_checkpoint_s,
        )
        bar.close()
        atomic_torch_save({"format": SUPERNET_FORMAT, "flat": net.flat.detach().cpu()}, path)
        self.state.supernet[space] = {**res.to_dict(), "tag": _tag(net), "remove": sorted(remove)}
        self.save_checkpoint()
        progress.unlink(missing_ok=True)  # the weights are saved: the training's progress is no longer needed
        logger.info(
            f"supernet ({space}): {res.steps} steps in {res.wall_s:.0f} s, "
            f"KD loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}"
            if res.losses
            else f"supernet ({space}): no training steps"
        )
        return net
