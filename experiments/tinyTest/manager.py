"""Manager of the tinyTest experiment (see configs.py for the setup)."""

from experiments.util import BasicManager


class Manager(BasicManager):
    """Runs tinyTest grid points with the default data and model hooks and its own LoggingCallback."""

    experiment = "tinyTest"

    def logging_callback_class(self) -> type:
        from experiments.tinyTest.logging_callback import LoggingCallback

        return LoggingCallback
