"""vidbatch: batch AI video generation, priced, frozen, followed and settled exactly once."""

__version__ = "0.1.0"
