"""Forgetting along the stream against hand-computed matrices."""

import pytest

from copal_exp.metrics.forgetting import forgetting_curve, forgetting_summary, forgetting_table
from copal_exp.metrics.transfer import backward_transfer


def test_forgetting_table_and_curve_by_hand():
    # columns a, b, c, d; order b > d > a > c
    matrix = [[10.0, 5.0, 30.0, 40.0],   # after b
              [11.0, 6.0, 31.0, 20.0],   # after d
              [8.0, 7.5, 29.0, 21.0],    # after a
              [9.0, 8.0, 12.0, 25.0]]    # after c
    order = [1, 3, 0, 2]
    table = forgetting_table(matrix, order)
    n = None
    assert table == [[n, n, n, n],
                     [1.0, n, n, n],               # b: 6 − 5
                     [2.5, 1.0, n, n],             # b: 7.5 − 5, d: 21 − 20
                     [3.0, 5.0, 1.0, n]]           # b: 8 − 5, d: 25 − 20, a: 9 − 8
    curve = forgetting_curve(table)
    assert curve == pytest.approx([None, 1.0, 1.75, 3.0])
    assert curve[-1] == pytest.approx(backward_transfer(matrix, order))  # the paper's BWT is the last row's mean
    partial = forgetting_table(matrix[:2], order)  # an order still running: the rows computed so far
    assert partial == table[:2]


def test_forgetting_summary_over_orders():
    curves = [[None, 1.0, 3.0], [None, -1.0, 5.0], [None, 0.0, 1.0]]
    s = forgetting_summary(curves)
    assert s["mean"] == pytest.approx([None, 0.0, 3.0])
    assert s["worst"] == [None, 1.0, 5.0] and s["min"] == [None, -1.0, 1.0]
    assert s["std"][2] == pytest.approx((8 / 3) ** 0.5)
    assert s["worst_order"] == 1 and s["steps"] == 3 and s["orders"] == 3
    with pytest.raises(ValueError, match="different lengths"):
        forgetting_summary([[None, 1.0], [None, 1.0, 2.0]])
