"""Manager of the mtlCompare experiment (see configs.py for the setup)."""

from experiments.util import BasicManager


class Manager(BasicManager):
    """Runs mtlCompare grid points with the default data and model hooks and its own LoggingCallback."""

    experiment = "mtlCompare"

    def logging_callback_class(self) -> type:
        from experiments.mtlCompare.logging_callback import LoggingCallback

        return LoggingCallback
