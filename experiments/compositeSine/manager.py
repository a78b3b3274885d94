"""Manager of the compositeSine experiment (see configs.py for the setup)."""

from experiments.util import BasicManager


class Manager(BasicManager):
    """Runs compositeSine grid points with the default data, model and logging hooks."""

    experiment = "compositeSine"
