"""Supervised fine-tuning (SFT) on desirable completions, as a loss like the others."""

from __future__ import annotations

from dataclasses import dataclass

from ptalign.losses import LOSSES
from ptalign.losses.base import Loss, LossOutput, UnpairedLogps
from ptalign.losses.simpo import mean_token_logp


@LOSSES.register("sft")
@dataclass
class SFTLoss(Loss):
    """Maximum likelihood on desirable completions: the mean token negative log-likelihood

        L = -(1 / |y|) sum_t log pi_theta(y_t | x, y_<t)

    per example, times its weight (|y| = ``n_tokens``; an empty completion gives 0). No
    reference model. The recipe drops undesirable examples (``desirable_only``); an
    undesirable example reaching this loss is an error, since maximising its likelihood would
    train the model *toward* it. chosen_rewards are the mean token log-probs (detached);
    rejected_rewards is empty.
    """

    requires_reference = False
    desirable_only = True

    def __call__(self, inputs: UnpairedLogps) -> LossOutput:
        labels = inputs.labels.bool()
        if not bool(labels.all()):
            raise ValueError(
                f"sft trains on desirable completions only, got {int((~labels).sum())} undesirable "
                "example(s); drop them before building the batch (SFTLoss.desirable_only is True)"
            )
        mean_logp = mean_token_logp(inputs.policy, inputs.n_tokens)
        return LossOutput(-mean_logp * inputs.weights, mean_logp.detach(), inputs.policy.new_zeros(0))
