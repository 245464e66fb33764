"""Attack-aware alignment: a simulated harmful fine-tuning step inside each training step.

During alignment, ``SimulatedAttack.attacked`` moves the trainable weights theta a few
normalized gradient steps down the harmful-data loss (what a malicious user's fine-tuning
would do; the normalized step is Booster's simulated harmful perturbation, Huang et al. 2024),

    theta' = theta - rho * g / ||g||,   g = grad_theta L_attack(theta)    (``steps`` times)

lets the trainer take the alignment loss at theta' and add its gradient to the step, then
restores theta. The update is first order (d theta' / d theta taken as the identity, as in
first-order MAML and the tamper-resistant training of Tamirisa et al. 2024): the model is
pushed toward weights from which a short harmful fine-tune still lands on refusals.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator

import torch

from ptalign.batches import TrainData, collate_batch


@dataclass
class SimulatedAttack:
    """A few SGD steps of supervised fine-tuning on held-aside harmful completions.

    data:       harmful prompt/completion pairs (an SFT ``TrainData``), cycled batch by batch
    steps:      normalized gradient steps per simulated attack
    radius:     rho, the length of each step in parameter space (no optimizer state is kept)
    weight:     the weight of the loss at the attacked weights, relative to the clean loss
    """

    data: TrainData
    pad_id: int
    max_length: int
    steps: int = 1
    radius: float = 0.5
    weight: float = 1.0
    _cursor: int = 0

    def next_batch(self, device) -> dict[str, torch.Tensor]:
        batch = self.data.batches[self._cursor % len(self.data.batches)]
        self._cursor += 1
        return {k: v.to(device) for k, v in collate_batch(self.data, batch, self.pad_id, self.max_length).items()}

    def attack_loss(self, scorer, batch) -> torch.Tensor:
        """Mean token negative log-likelihood of the harmful completions (the attacker's SFT loss)."""
        logps, n_tokens = scorer(batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        return -(logps / n_tokens.clamp(min=1)).mean()

    @contextlib.contextmanager
    def attacked(self, scorer: torch.nn.Module, params: list[torch.nn.Parameter]) -> Iterator[None]:
        """Inside the block the trainable ``params`` hold the attacked weights; restored after.

        The attack's gradients come from ``torch.autograd.grad``, so they never touch the
        ``.grad`` the trainer is accumulating.
        """
        saved = [p.detach().clone() for p in params]
        try:
            for _ in range(self.steps):
                loss = self.attack_loss(scorer, self.next_batch(params[0].device))
                grads = torch.autograd.grad(loss, params, allow_unused=True)
                norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)).clamp(min=1e-12)
                with torch.no_grad():
                    for p, g in zip(params, grads):
                        if g is not None:
                            p.sub_(g * (self.radius / norm))
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
