"""Manager of the tinyTest experiment (see configs.py)."""

from experiments.util import BasicManager


class Manager(BasicManager):
    """compositeSine at toy size: the default hooks."""

    experiment = "tinyTest"
