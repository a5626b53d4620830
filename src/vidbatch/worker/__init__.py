"""The batch worker: ``run_once`` does one round of every step; ``WorkerLoop`` (the daemon)
runs the steps side by side as a pipeline of stages."""

from vidbatch.worker.round import RoundSummary, run_once

__all__ = ["RoundSummary", "run_once"]
