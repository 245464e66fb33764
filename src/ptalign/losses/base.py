"""Typed inputs and outputs shared by every loss.

A loss is a small dataclass of hyper-parameters whose ``__call__`` is a pure function of
per-sequence log-probs: no model, no device moves, no reduction, no logging. It returns
per-example losses; the trainer decides how to reduce them. The class attributes tell the
training recipe what the loss needs, so the recipe asks instead of reading flags.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor


@dataclass
class UnpairedLogps:
    """One batch of unpaired feedback (KTO-style). Every tensor has shape ``[B]``.

    policy:          sum over completion tokens of log pi_theta(y_t | x, y_<t)
    reference:       the same under the frozen reference model (None for reference-free losses)
    labels:          bool, True = desirable completion, False = undesirable
    weights:         per-example weights (1.0 by default; later work up-weights hard examples)
    n_tokens:        number of completion tokens of each sequence (for length-normalised losses)
    reference_point: scalar tensor z_ref for losses that judge rewards against a reference point
                     (KTO's batch KL estimate, a running mean, or a fixed value); detached.
    """

    policy: Tensor
    labels: Tensor
    weights: Tensor
    n_tokens: Tensor
    reference: Tensor | None = None
    reference_point: Tensor | None = None


@dataclass
class PairedLogps:
    """One batch of preference pairs (DPO-style). Every tensor has shape ``[B]``.

    chosen / rejected:           summed completion log-probs under the policy
    ref_chosen / ref_rejected:   the same under the reference model (None when reference-free)
    chosen_tokens / rejected_tokens: completion token counts
    weights:                     per-pair weights
    """

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    weights: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None


@dataclass
class LossOutput:
    """losses: ``[B]`` per-example (already weighted) losses, not reduced.
    chosen_rewards: ``[N_desirable]`` detached implied rewards of desirable/chosen completions.
    rejected_rewards: ``[N_undesirable]`` the same for undesirable/rejected completions.
    """

    losses: Tensor
    chosen_rewards: Tensor
    rejected_rewards: Tensor


class Loss:
    """What a training recipe may ask of a loss before it builds batches."""

    #: consumes :class:`PairedLogps` (True) or :class:`UnpairedLogps` (False)
    paired: ClassVar[bool] = False
    #: needs log-probs of a frozen reference model
    requires_reference: ClassVar[bool] = True
    #: trains on desirable completions only (SFT); the recipe drops the others
    desirable_only: ClassVar[bool] = False

    @property
    def requires_kl(self) -> bool:
        """Whether each batch needs KTO's mismatched (prompt, completion) KL batch."""
        return False
