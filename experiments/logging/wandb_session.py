"""The W&B side of a run: mode choice, the run's logger, images, logged rows, closing the run.

The only module that imports ``wandb``, and only lazily (it is slow to import and a
run with W&B disabled never needs it); Lightning's ``WandbLogger`` is imported lazily
too, so ``WANDB_MODES`` and ``resolve_wandb_mode`` are cheap for a command-line parser.
Never prompts for a key: without a login the default mode is offline.
"""

from __future__ import annotations

import io
import logging
import netrc
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Optional, Union
from urllib.parse import urlparse

from core_code.util.lightning_compat import drop_unset_wandb_init
from experiments.run_state import jsonable

if TYPE_CHECKING:
    from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger(__name__)

#: The W&B modes a run may use (main.py --wandb, BasicManager's wandb_mode).
WANDB_MODES = ("online", "offline", "disabled")


def wandb_logged_in() -> bool:
    """True if a W&B API key is at hand (WANDB_API_KEY or ~/.netrc); no network."""
    if os.environ.get("WANDB_API_KEY", "").strip():
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        auth = netrc.netrc(path).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: Optional[str]) -> str:
    """'online', 'offline' or 'disabled'; None: online when logged in, else offline.

    With None, a valid WANDB_MODE in the environment is respected. 'online' without a
    login is an error (W&B would otherwise prompt for a key).
    """
    if mode is None:
        env = os.environ.get("WANDB_MODE", "").strip().lower()
        env = {"dryrun": "offline", "run": "online"}.get(env, env)
        mode = env if env in WANDB_MODES else ("online" if wandb_logged_in() else "offline")
        if mode == "online" and not wandb_logged_in():
            mode = "offline"
    if mode not in WANDB_MODES:
        raise ValueError(f"W&B mode is {mode!r}; allowed: {', '.join(WANDB_MODES)} or None (auto: online "
                         "when logged in, else offline)")
    if mode == "online" and not wandb_logged_in():
        raise ValueError("W&B mode 'online' needs a login (`wandb login` or WANDB_API_KEY); "
                         "use mode 'offline' (sync later with `wandb sync`) or 'disabled'")
    return mode


def make_wandb_logger(project: str, name: str, run_id: str, group: str, tags: list[str], config: dict,
                      save_dir: Union[str, Path], mode: Optional[str] = None) -> Optional[WandbLogger]:
    """The run's WandbLogger (``resolve_wandb_mode``); None when mode is 'disabled'.

    ``id=run_id, resume='allow'``: a rerun continues the same W&B run. Never prompts;
    offline runs are written under ``save_dir/wandb`` and make no network call.
    """
    mode = resolve_wandb_mode(mode)
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb
    from pytorch_lightning.loggers import WandbLogger

    if getattr(wandb, "run", None) is not None:
        # Lightning would silently log into the open run: close it first.
        log.warning("a W&B run (%s) is still open; finishing it before starting %s", wandb.run.id, run_id)
        finish_wandb()
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    logger = WandbLogger(
        project=project,
        name=name,
        id=run_id,
        save_dir=str(save_dir),
        group=group,
        tags=[str(t) for t in tags],
        config=jsonable(config),
        mode=mode,
        resume="allow",
        settings=wandb.Settings(silent=True, show_info=False, show_warnings=False),
    )
    # Lightning passes anonymous=None, and W&B warns that the setting has no effect.
    drop_unset_wandb_init(logger, "anonymous")
    return logger


def wandb_loggers(loggers: Iterable[Any]) -> list[WandbLogger]:
    """The W&B loggers among a Trainer's loggers (the ones that take images)."""
    from pytorch_lightning.loggers import WandbLogger

    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


def wandb_image(fig: Any, png: Optional[Path] = None) -> Any:
    """A ``wandb.Image`` of a figure: from its saved ``png`` if given, else rendered in memory."""
    import wandb

    if png is not None:
        return wandb.Image(str(png))
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    buf.seek(0)
    return wandb.Image(Image.open(buf))


def log_history(logger: Any, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> int:
    """Send ``(step, metrics)`` rows to ``logger`` (a ``WandbLogger``) in order; returns how many.

    Each row goes through ``logger.log_metrics(metrics, step=step)``, as a Trainer's
    logging would send it (W&B then gets ``trainer/global_step = step``); a ``Path`` value
    (a saved PNG) becomes a ``wandb.Image`` of it. For runs logged after the fact (the
    members of a vectorized ensemble, ``experiments.vectorize``).
    """
    n = 0
    for step, metrics in rows:
        logger.log_metrics({k: wandb_image(None, v) if isinstance(v, Path) else v for k, v in metrics.items()},
                           step=step)
        n += 1
    return n


def finish_wandb(exit_code: Optional[int] = None) -> None:
    """``wandb.finish()`` if wandb was imported and a run is open; never raises."""
    wandb = sys.modules.get("wandb")
    if wandb is None or getattr(wandb, "run", None) is None:
        return
    try:
        wandb.finish(exit_code=exit_code)
    except Exception as err:  # noqa: BLE001 - called in a finally: must not mask the real error
        log.warning("wandb.finish() failed: %s: %s", type(err).__name__, err)
