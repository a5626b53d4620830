"""The batch worker: ``run_once`` does one round; ``WorkerLoop`` repeats it."""

from vidbatch.worker.round import RoundSummary, run_once

__all__ = ["RoundSummary", "run_once"]
