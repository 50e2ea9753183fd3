"""The metrics of docs/design.md ("Metrics") on hand-written matrices, with hand-computed expectations."""

import pytest
import torch

from copal_exp.metrics.transfer import (
    backward_transfer,
    mask_change,
    per_dataset,
    sparsity_report,
    summary,
    weight_stasis,
)
from copal_exp.pruning.masks import pack_mask

# columns: wikitext2, ptb, c4; rows: after step 1, 2, 3
R1 = [[10.0, 20.0, 30.0], [11.0, 21.0, 31.0], [12.0, 23.0, 33.0]]  # order ptb → wikitext2 → c4
O1 = [1, 0, 2]
R2 = [[9.0, 19.0, 29.0], [9.5, 19.5, 29.5], [10.0, 22.0, 28.0]]  # order c4 → ptb → wikitext2
O2 = [2, 1, 0]


def test_backward_transfer_by_hand():
    # ((R[3][ptb] − R[1][ptb]) + (R[3][wiki] − R[2][wiki])) / 2 = ((23 − 20) + (12 − 11)) / 2
    assert backward_transfer(R1, O1) == pytest.approx(2.0)
    # ((28 − 29) + (22 − 19.5)) / 2
    assert backward_transfer(R2, O2) == pytest.approx(0.75)
    assert backward_transfer([[5.0]], [0]) is None


def test_summary_by_hand_and_paper_dense_check():
    s = summary([R1, R2], [O1, O2])
    assert s["a_bwt"] == pytest.approx((2.0 + 0.75) / 2)
    assert s["m_bwt"] == pytest.approx(2.0)
    assert s["a_ppl"] == pytest.approx((12 + 23 + 33 + 10 + 22 + 28) / 6)
    assert s["m_ppl"] == pytest.approx(33.0)
    dense = [[5.677, 10.120, 7.344]] * 3  # paper: dense LLaMA-7B
    s = summary([dense, dense], [[0, 1, 2], [2, 0, 1]])
    assert round(s["a_ppl"], 3) == 7.714 and s["m_ppl"] == pytest.approx(10.120)
    assert s["a_bwt"] == 0.0


def test_per_dataset_by_hand():
    table = per_dataset([R1, R2], [O1, O2], ["wikitext2", "ptb", "c4"])
    # wikitext2: not last in O1 (pos 1: 12 − 11 = 1), last in O2 → one value
    assert table["wikitext2"]["bwt_mean"] == pytest.approx(1.0) and table["wikitext2"]["n_bwt"] == 1
    # ptb: O1 pos 0: 23 − 20 = 3; O2 pos 1: 22 − 19.5 = 2.5 → mean 2.75, population std 0.25
    assert table["ptb"]["bwt_mean"] == pytest.approx(2.75)
    assert table["ptb"]["bwt_std"] == pytest.approx(0.25)
    # c4: last in O1; O2 pos 0: 28 − 29 = −1
    assert table["c4"]["bwt_mean"] == pytest.approx(-1.0)
    assert table["c4"]["ppl_mean"] == pytest.approx((33 + 28) / 2) and table["c4"]["ppl_std"] == pytest.approx(2.5)


def test_weight_stasis_and_mask_change():
    assert weight_stasis([None, 0.0, 0.0]) is True
    assert weight_stasis([None, 0.0, 0.01]) is False
    assert weight_stasis([None]) is False
    a = {"x": torch.tensor([[True, False, True, True], [False, False, True, True]])}
    b = {"x": torch.tensor([[True, True, False, True], [False, False, True, True]])}
    sizes = {"x": 8}
    packed_a, packed_b = ({k: pack_mask(v) for k, v in m.items()} for m in (a, b))
    assert mask_change(packed_a, packed_b, sizes) == pytest.approx(2 / 8)
    assert mask_change(packed_a, packed_a, sizes) == 0.0


def test_sparsity_report():
    rep = sparsity_report({"a": torch.tensor([True, False]), "b": torch.tensor([False, False, False, True])})
    assert rep["layers"] == {"a": 0.5, "b": 0.75}
    assert rep["overall"] == pytest.approx(4 / 6)
