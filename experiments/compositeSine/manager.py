"""Manager of the compositeSine experiment (see configs.py for the setup)."""

from experiments.util import BasicManager


class Manager(BasicManager):
    """Runs compositeSine grid points with the default data and model hooks and its own LoggingCallback."""

    experiment = "compositeSine"

    def logging_callback_class(self) -> type:
        from experiments.compositeSine.logging_callback import LoggingCallback

        return LoggingCallback
