"""Loss registry: every alignment loss registers under a name; ``build_loss`` builds one.

    from ptalign.losses import build_loss
    loss = build_loss("prospect", beta=0.1, loss_aversion=2.25)
    out = loss(UnpairedLogps(...))          # LossOutput with per-example losses [B]

Unknown loss names fail listing the known ones; unknown parameters fail listing the
accepted ones.
"""

from __future__ import annotations

import math
from dataclasses import fields

from ptalign.losses.base import Loss, LossOutput, PairedLogps, UnpairedLogps
from ptalign.registry import Registry, UnknownNameError

LOSSES: Registry[type[Loss]] = Registry("loss")


def check_param(loss: Loss, name: str, ok: bool, allowed: str) -> None:
    """Raise ValueError naming ``loss.name`` and its allowed range unless ``ok``."""
    if not ok:
        value = getattr(loss, name)
        raise ValueError(f"{type(loss).__name__}: {name} must be {allowed}, got {value!r}")


def is_real(value: object) -> bool:
    """A finite int or float (bools excluded: ``beta=True`` is a typo, not 1.0)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# Imported after LOSSES exists: each module registers its classes with @LOSSES.register.
from ptalign.losses.dpo import DPOLoss, IPOLoss  # noqa: E402
from ptalign.losses.kto import KTOLoss  # noqa: E402
from ptalign.losses.prospect import ProspectLoss  # noqa: E402
from ptalign.losses.sft import SFTLoss  # noqa: E402
from ptalign.losses.simpo import SimPOLoss  # noqa: E402


def build_loss(name: str, **params: object) -> Loss:
    """The loss registered as ``name``, built with ``params``.

    Raises UnknownNameError (listing the known losses) for an unknown ``name`` and ValueError
    (listing the accepted parameters) for a parameter the loss does not take.
    """
    cls = LOSSES.get(name)
    accepted = [f.name for f in fields(cls) if f.init]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(
            f"loss {name!r} got unknown parameter(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or '(none)'}"
        )
    return cls(**params)


__all__ = [
    "LOSSES",
    "DPOLoss",
    "IPOLoss",
    "KTOLoss",
    "Loss",
    "LossOutput",
    "PairedLogps",
    "ProspectLoss",
    "SFTLoss",
    "SimPOLoss",
    "UnknownNameError",
    "UnpairedLogps",
    "build_loss",
]
