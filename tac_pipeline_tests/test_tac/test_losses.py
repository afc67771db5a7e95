"""The three losses against values worked out by hand, and against a re-statement of the
authors' code (``loss_utils.py`` of the original repository)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tac_pipeline.tac import ClusterHead, balance_loss, consistency_loss, distillation_loss


def _original_distill(c_i: torch.Tensor, c_j: torch.Tensor, tau: float) -> torch.Tensor:
    """The original DistillLoss.forward, restated: masked negatives, [pos, negs] logits, label 0."""
    k = c_i.shape[1]
    n = 2 * k
    mask = torch.ones((n, n)).fill_diagonal_(0)
    for i in range(k):
        mask[i, k + i] = 0
        mask[k + i, i] = 0
    c = F.normalize(torch.cat((c_i.t(), c_j.t()), dim=0), dim=1)
    sim = c @ c.T / tau
    positives = torch.cat((torch.diag(sim, k), torch.diag(sim, -k)), dim=0).reshape(n, 1)
    negatives = sim[mask.bool()].reshape(n, -1)
    logits = torch.cat((positives, negatives), dim=1)
    return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long), reduction="sum") / n


class TestDistillation:
    def test_identity_batches_tau_1(self):
        # A = B = I (batch 2, K = 2). Columns A1 = B1 = e1, A2 = B2 = e2 (already unit norm).
        # Cosines: A1.B1 = 1 (the positive), A1.A2 = 0, A1.B2 = 0; every row looks the same.
        # Row A1: CE = logsumexp(A2, B1, B2) - pos = log(e^0 + e^1 + e^0) - 1 = log(2 + e) - 1
        #       = log(4.718282) - 1 = 0.551445. Sum of 4 equal rows / 4 = 0.551445.
        eye = torch.eye(2)
        assert distillation_loss(eye, eye, tau=1.0).item() == pytest.approx(
            math.log(2 + math.e) - 1, abs=1e-6
        )
        assert distillation_loss(eye, eye, tau=1.0).item() == pytest.approx(0.551445, abs=1e-6)

    def test_identity_batches_tau_half(self):
        # Same columns, similarities divided by tau = 0.5: row = log(1 + e^2 + 1) - 2
        #   = log(9.389056) - 2 = 0.239545.
        eye = torch.eye(2)
        assert distillation_loss(eye, eye, tau=0.5).item() == pytest.approx(0.239545, abs=1e-6)

    def test_soft_batch(self):
        # A = [[0.8, 0.2], [0.2, 0.8]], B = I, tau = 1.
        # |A1| = |A2| = sqrt(0.64 + 0.04) = sqrt(0.68) = 0.824621.
        # cos(A1, A2) = (0.16 + 0.16) / 0.68 = 0.470588; cos(A1, B1) = 0.8 / 0.824621 = 0.970143;
        # cos(A1, B2) = 0.2 / 0.824621 = 0.242536; cos(B1, B2) = 0.
        # Row A1: pos = 0.970143, others {A2, B1, B2} -> e^0.470588 + e^0.970143 + e^0.242536
        #   = 1.600936 + 2.638320 + 1.274477 = 5.513733; log = 1.707242 -> 1.707242 - 0.970143 = 0.737099.
        # Row B1: pos = cos(B1, A1) = 0.970143, others {A1, A2, B2} -> 2.638320 + 1.274477 + 1
        #   = 4.912797; log = 1.591844 -> 0.621701.
        # Rows A2, B2 mirror A1, B1. D = (2 * 0.737099 + 2 * 0.621701) / 4 = 0.679400.
        a = torch.tensor([[0.8, 0.2], [0.2, 0.8]])
        assert distillation_loss(a, torch.eye(2), tau=1.0).item() == pytest.approx(0.679400, abs=1e-5)

    @pytest.mark.parametrize("tau", [0.5, 5.0])
    def test_matches_original_code(self, tau):
        g = torch.Generator().manual_seed(0)
        a = torch.softmax(torch.randn(64, 7, generator=g), dim=1)
        b = torch.softmax(torch.randn(64, 7, generator=g), dim=1)
        assert distillation_loss(a, b, tau).item() == pytest.approx(
            _original_distill(a, b, tau).item(), rel=1e-5
        )

    def test_gradients_match_original_code(self):
        g = torch.Generator().manual_seed(1)
        logits = torch.randn(32, 5, generator=g, requires_grad=True)
        other = torch.softmax(torch.randn(32, 5, generator=g), dim=1)
        (grad_ours,) = torch.autograd.grad(distillation_loss(torch.softmax(logits, 1), other, 0.5), logits)
        (grad_orig,) = torch.autograd.grad(_original_distill(torch.softmax(logits, 1), other, 0.5), logits)
        torch.testing.assert_close(grad_ours, grad_orig, rtol=1e-4, atol=1e-7)


class TestConsistency:
    def test_hand_values(self):
        # Row dots: (0.5, 0.5).(0.5, 0.5) = 0.5 and (1, 0).(0.25, 0.75) = 0.25.
        # -log 0.5 = 0.693147, -log 0.25 = 1.386294, mean = 1.039721.
        p = torch.tensor([[0.5, 0.5], [1.0, 0.0]])
        q = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
        assert consistency_loss(p, q).item() == pytest.approx(1.039721, abs=1e-6)

    def test_log_clamped_at_minus_100(self):
        # Orthogonal one-hots: dot 0, log 0 = -inf clamped to -100 as torch's BCE does -> loss 100.
        p = torch.tensor([[1.0, 0.0]])
        q = torch.tensor([[0.0, 1.0]])
        assert consistency_loss(p, q).item() == pytest.approx(100.0)

    def test_matches_torch_bce_with_gradient(self):
        g = torch.Generator().manual_seed(2)
        logits = torch.randn(16, 4, generator=g, requires_grad=True)
        q = torch.softmax(torch.randn(16, 4, generator=g), dim=1)
        ours = consistency_loss(torch.softmax(logits, 1), q)
        p = torch.softmax(logits, 1)
        dot = torch.bmm(p.view(16, 1, 4), q.view(16, 4, 1)).squeeze()
        orig = F.binary_cross_entropy(dot, torch.ones_like(dot))
        assert ours.item() == pytest.approx(orig.item(), rel=1e-6)
        torch.testing.assert_close(torch.autograd.grad(ours, logits)[0], torch.autograd.grad(orig, logits)[0])


class TestBalance:
    def test_uniform_mean(self):
        # mean of [[1, 0], [0, 1]] = (0.5, 0.5); H = -2 * 0.5 * log 0.5 = log 2 = 0.693147.
        assert balance_loss(torch.eye(2)).item() == pytest.approx(math.log(2), abs=1e-6)

    def test_three_clusters(self):
        # mean of [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]] = (0.4, 0.2, 0.4);
        # H = -(2 * 0.4 * log 0.4 + 0.2 * log 0.2) = 0.8 * 0.916291 + 0.2 * 1.609438 = 1.054920.
        p = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
        assert balance_loss(p).item() == pytest.approx(1.054920, abs=1e-6)

    def test_collapsed_uses_clamp(self):
        # mean (1, 0): the zero is clamped to 1e-9 -> H = -(1 * log 1 + 1e-9 * log 1e-9) = 2.07e-8, not NaN.
        p = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        assert balance_loss(p).item() == pytest.approx(1e-9 * 9 * math.log(10), rel=1e-3)

    def test_sum_of_both_heads(self):
        # L_bal = H(mean p) + H(mean q). p = I (mean (0.5, 0.5), H = log 2 = 0.693147) and
        # q = [[1, 0], [1, 0]] (H = 2.07e-8): L_bal = 0.693147.
        q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
        assert balance_loss(torch.eye(2), q).item() == pytest.approx(0.693147, abs=1e-6)
        assert balance_loss(torch.eye(2), torch.eye(2)).item() == pytest.approx(2 * math.log(2), abs=1e-6)


def test_cluster_head_architecture():
    torch.manual_seed(0)
    head = ClusterHead(16, 3)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "Softmax"]
    assert head[0].weight.shape == (16, 16) and head[3].weight.shape == (3, 16)
    # trunc-normal std 0.02 (bounds +-2 are ~100 std away, so effectively a normal).
    assert 0.015 < head[0].weight.std().item() < 0.025
    out = head.train()(torch.randn(8, 16))
    torch.testing.assert_close(out.sum(dim=1), torch.ones(8))
    assert list(head.state_dict())[:2] == ["0.weight", "0.bias"]


def test_batched_distillation_is_the_sum():
    # The training loop evaluates D(p, q^N) + D(q, p^N) as one (2, B, K) call.
    g = torch.Generator().manual_seed(3)
    p, q, pn, qn = (torch.softmax(torch.randn(16, 4, generator=g), 1) for _ in range(4))
    both = distillation_loss(torch.stack([p, q]), torch.stack([qn, pn]), 0.5)
    separate = distillation_loss(p, qn, 0.5) + distillation_loss(q, pn, 0.5)
    assert both.item() == pytest.approx(separate.item(), rel=1e-6)
