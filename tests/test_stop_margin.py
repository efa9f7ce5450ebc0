"""The teacher-forced stop margin the objective ranks no-stop trials by (trainer.evaluate.stop_end_margins)."""

from __future__ import annotations

import torch

from trainer.evaluate import stop_end_margins


def logits_from_probs(p: list[list[float]]) -> torch.Tensor:
    return torch.logit(torch.tensor(p))


def test_an_untrained_head_that_says_half_everywhere_has_no_margin() -> None:
    margins = stop_end_margins(logits_from_probs([[0.5, 0.5, 0.5, 0.5]]), torch.tensor([4]))
    assert torch.allclose(margins, torch.zeros(1), atol=1e-6)


def test_a_head_that_fires_only_at_the_last_real_frame_scores_near_one_and_padding_is_ignored() -> None:
    probs = [[0.01, 0.01, 0.99, 0.9, 0.9], [0.01, 0.02, 0.03, 0.04, 0.8]]
    margins = stop_end_margins(logits_from_probs(probs), torch.tensor([3, 5]))
    assert torch.isclose(margins[0], torch.tensor(0.99 - 0.01))  # frames 3-4 are padding
    assert torch.isclose(margins[1], torch.tensor(0.8 - 0.025))


def test_firing_early_is_a_negative_margin() -> None:
    margins = stop_end_margins(logits_from_probs([[0.9, 0.9, 0.1]]), torch.tensor([3]))
    assert margins[0] < 0
