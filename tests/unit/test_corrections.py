"""Rollout corrections (TIS, token/sequence MIS, IcePop) against hand-computed values and slow references."""

import math

import pytest
import torch

from rlvr import algos

LN = math.log


def _batch():
    # k = exp(old - rollout) per token; row 0: [0.4, 1.0, 3.0], row 1: [1.5, 0.9, (padding 100)]
    old = torch.tensor([[LN(0.4), 0.0, LN(3.0)], [LN(1.5), LN(0.9), LN(100.0)]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return old, torch.zeros(2, 3), mask


def test_mis_token_hand_computed():
    old, rollout, mask = _batch()
    w, keep = algos.CORRECTIONS["mis_token"](old, rollout, mask)  # band [0.5, 2]
    # 0.4 < 0.5 -> 0 ; 1.0 kept ; 3.0 > 2 -> 0 ; 1.5, 0.9 kept (k as the weight) ; padding 0
    assert w.tolist() == [pytest.approx(v, abs=1e-6) for v in ([0.0, 1.0, 0.0], [1.5, 0.9, 0.0])]
    assert keep.tolist() == [[False, True, False], [True, True, False]]
    s = algos.correction_sums(w, keep, mask)
    # 2 of 5 valid tokens masked, both in row 0 -> 1 of 2 sequences; weights 1 + 1.5 + 0.9 = 3.4, max 1.5
    assert s == pytest.approx({"correction_masked_tokens": 2.0, "correction_masked_seqs": 1.0, "correction_seqs": 2.0,
                               "correction_weight_sum": 3.4, "correction_weight_max": 1.5})


def test_icepop_hand_computed():
    old, rollout, mask = _batch()
    w, _ = algos.CORRECTIONS["icepop"](old, rollout, mask)  # Ring-1T band [0.5, 5]: M(k) = k inside
    # 0.4 < 0.5 -> 0 ; 1.0 ; 3.0 (inside [0.5, 5]) ; 1.5 ; 0.9
    assert w.tolist() == [pytest.approx(v, abs=1e-6) for v in ([0.0, 1.0, 3.0], [1.5, 0.9, 0.0])]
    w2, _ = algos.CORRECTIONS["icepop"](old, rollout, mask, low=0.3, high=1.2)  # 3.0 and 1.5 out
    assert w2.tolist() == [pytest.approx(v, abs=1e-6) for v in ([0.4, 1.0, 0.0], [0.0, 0.9, 0.0])]


def test_mis_seq_hand_computed():
    old, rollout, mask = _batch()
    # product: row 0 = 0.4 * 1 * 3 = 1.2 (inside [0.5, 2]) -> every token 1.2 ; row 1 = 1.5 * 0.9 = 1.35 -> 1.35
    w, keep = algos.CORRECTIONS["mis_seq"](old, rollout, mask, seq_ratio="product")
    assert w.tolist() == [pytest.approx(v, abs=1e-6) for v in ([1.2] * 3, [1.35, 1.35, 0.0])]
    # band [0.5, 1.3]: row 1 (1.35) masked entirely
    w, keep = algos.CORRECTIONS["mis_seq"](old, rollout, mask, seq_ratio="product", high=1.3)
    assert w.tolist() == [pytest.approx(v, abs=1e-6) for v in ([1.2] * 3, [0.0] * 3)]
    assert algos.correction_sums(w, keep, mask)["correction_masked_seqs"] == 1.0
    # geo_mean: row 0 = 1.2^(1/3) = 1.062659, row 1 = 1.35^(1/2) = 1.161895; band [0.9, 1.1] keeps row 0 only,
    # with weight 1 (a geometric mean is a test, not an IS weight)
    w, _ = algos.CORRECTIONS["mis_seq"](old, rollout, mask, low=0.9, high=1.1)
    assert w.tolist() == [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]
    # default geo_mean band [1/1.001, 1.001]: both rows out
    w, _ = algos.CORRECTIONS["mis_seq"](old, rollout, mask)
    assert w.abs().sum() == 0


def test_tis_correction_is_tis_weights():
    old, rollout, mask = _batch()
    w, keep = algos.CORRECTIONS["tis"](old, rollout, mask, high=2.0)
    assert torch.equal(w, algos.tis_weights(old, rollout, 2.0)) and torch.equal(keep, mask > 0)


@pytest.mark.parametrize("mode,opts", [("tis", {}), ("tis", {"high": 1.5}), ("mis_token", {}),
                                       ("mis_token", {"low": 0.8, "high": 1.1}), ("icepop", {}),
                                       ("mis_seq", {"seq_ratio": "product"}), ("mis_seq", {"low": 0.95, "high": 1.05}),
                                       ("mis_seq", {"seq_ratio": "product", "low": 0.3, "high": 3.0})])
def test_corrections_match_slow_reference(mode, opts):
    gen = torch.Generator().manual_seed(11)
    old = -torch.rand(7, 6, generator=gen) * 3
    rollout = old + torch.randn(7, 6, generator=gen) * 0.3
    mask = (torch.rand(7, 6, generator=gen) > 0.3).float()
    mask[-1] = 0
    w, keep = algos.CORRECTIONS[mode](old, rollout, mask, **opts)
    assert torch.allclose((w * mask).double(), algos.correction_reference(old, rollout, mask, mode, **opts), atol=1e-5)
    assert not w.requires_grad and (keep <= (mask > 0)).all()


def test_corrections_are_detached():
    old = torch.zeros(1, 2, requires_grad=True)
    for fn in algos.CORRECTIONS.values():
        w, _ = fn(old, torch.zeros(1, 2), torch.ones(1, 2))
        assert not w.requires_grad


def test_doctests():
    import doctest

    from rlvr.algos import corrections

    assert doctest.testmod(corrections).failed == 0
