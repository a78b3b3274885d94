"""Manager of the transfer experiment (see configs.py for the setup)."""

from experiments.util import BasicManager


class Manager(BasicManager):
    """Runs transfer grid points; its LoggingCallback draws no fit plots (hundreds of small points)."""

    experiment = "transfer"

    def logging_callback_class(self) -> type:
        from experiments.transfer.logging_callback import LoggingCallback

        return LoggingCallback
