import numpy as np
import pytest
import torch

from copal_exp.pruning import masks
from copal_exp.pruning.masks import (
    PackedMasks,
    Pattern,
    kth_smallest,
    nm_keep_group,
    nm_mask,
    pack_bits_tensor,
    pack_mask,
    prune_count,
    select_kth,
    select_mask,
    unpack_mask,
    unstructured_mask,
)


def test_unstructured_exact_count_despite_ties():
    # a dequantised checkpoint: only four distinct magnitudes
    score = torch.randint(0, 4, (64, 96)).float()
    for ratio in (0.1, 0.5, 0.7):
        keep = unstructured_mask(score, ratio, "layer")
        assert (~keep).sum().item() == prune_count(score.numel(), ratio)
        keep = unstructured_mask(score, ratio, "row")
        assert ((~keep).sum(dim=1) == prune_count(96, ratio)).all()


def test_unstructured_prunes_lowest_scores():
    score = torch.randn(32, 40)
    keep = unstructured_mask(score, 0.5, "layer")
    assert score[~keep].max() <= score[keep].min()
    keep = unstructured_mask(score, 0.25, "row")
    for r in range(32):
        assert score[r][~keep[r]].max() <= score[r][keep[r]].min()


def test_ties_broken_by_index():
    score = torch.zeros(1, 8)
    keep = unstructured_mask(score, 0.5, "row")
    assert keep.tolist() == [[False] * 4 + [True] * 4]


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_keeps_exactly_n_highest_per_group(n, m):
    score = torch.randint(0, 3, (16, 64)).float()  # many ties
    keep = nm_mask(score, n, m)
    groups = keep.reshape(16, -1, m)
    assert (groups.sum(-1) == n).all()
    s = score.reshape(16, -1, m)
    kept_min = torch.where(groups, s, torch.full_like(s, float("inf"))).min(-1).values
    pruned_max = torch.where(~groups, s, torch.full_like(s, -float("inf"))).max(-1).values
    assert (pruned_max <= kept_min).all()


def test_pattern_validation_messages():
    with pytest.raises(ValueError, match="sparsity.ratio=1.0"):
        Pattern.parse("unstructured", ratio=1.0)
    with pytest.raises(ValueError, match="1 <= N < M"):
        Pattern.parse("nm", n=4, m=4)
    with pytest.raises(ValueError, match="1 <= N < M"):
        Pattern.parse("nm", n=0, m=4)
    with pytest.raises(ValueError, match="not divisible by M=8"):
        Pattern.parse("nm", n=4, m=8).check_shape("model.layers.0.mlp.down_proj", 100)
    assert Pattern.parse("nm", n=2, m=4).ratio == 0.5


def test_select_mask_dispatch_and_packing():
    score = torch.randn(8, 16)
    assert torch.equal(select_mask(score, Pattern.parse("nm", n=2, m=4)), nm_mask(score, 2, 4))
    keep = select_mask(score, Pattern.parse("unstructured", ratio=0.5), "row")
    packed = pack_mask(keep)
    assert packed.nbytes == keep.numel() // 8
    assert torch.equal(unpack_mask(packed, keep.shape), keep)
    odd = torch.rand(3, 5) > 0.5  # a size that is not a multiple of 8
    assert torch.equal(unpack_mask(pack_mask(odd), odd.shape), odd)
    for mask in (keep, odd):  # the device path (tensor arithmetic) gives numpy's packbits bytes, as the CPU path
        assert np.array_equal(pack_bits_tensor(mask).numpy(), np.packbits(mask.numpy().reshape(-1)))
        assert np.array_equal(pack_mask(mask), pack_bits_tensor(mask).numpy())


def test_packed_masks_hold_bits_counts_and_shapes():
    from copal_exp.metrics.transfer import sparsity_report

    masks = {"a": torch.rand(6, 16) > 0.3, "b": torch.rand(4, 5) > 0.7}
    packed = PackedMasks()
    for name, mask in masks.items():
        packed.add(name, mask)
    assert list(packed) == ["a", "b"] and all(torch.equal(packed[n], m) for n, m in masks.items())
    assert packed.kept == {n: int(m.sum()) for n, m in masks.items()}
    assert sum(b.nbytes for b in packed.bits.values()) == 12 + 3  # one bit per weight, rounded up per mask
    assert sparsity_report(packed) == sparsity_report(masks)


def _mixed_ties(shape):
    """Rows of distinct scores and rows of few tied levels, interleaved: both paths of the selection at once."""
    g = torch.Generator().manual_seed(1)
    score = torch.rand(shape, generator=g)
    score[::2] = torch.randint(0, 4, (score[::2].shape), generator=g).float()
    return score


@pytest.mark.parametrize("group", ["layer", "row"])
@pytest.mark.parametrize("make", [lambda shape: torch.randint(0, 5, shape).float(), torch.rand, _mixed_ties],
                         ids=["tied", "distinct", "mixed"])
@pytest.mark.parametrize("split", [False, True], ids=["one-thread", "rows-split"])
def test_unstructured_equals_stable_sort_reference(group, make, split, monkeypatch):
    """Also with the rows split among three selection threads (each its own partition buffer)."""
    if split:
        monkeypatch.setattr(masks, "PARALLEL_MIN_ENTRIES", 1)
        threads = torch.get_num_threads()
        torch.set_num_threads(3)
    try:
        score = make((20, 33))
        rows = score.reshape(1, -1) if group == "layer" else score
        k = prune_count(rows.shape[1], 0.45)
        expected = torch.ones_like(rows, dtype=torch.bool)
        expected.scatter_(1, torch.sort(rows, dim=1, stable=True).indices[:, :k], False)
        assert torch.equal(unstructured_mask(score, 0.45, group), expected.reshape(score.shape))
    finally:
        if split:
            torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7, 13), (1, 1000), (64, 96)])
def test_kth_smallest_is_torch_kthvalue(dtype, shape):
    g = torch.Generator().manual_seed(3)
    score = torch.randn(shape, generator=g).to(dtype)
    score[:, :3] = score[:, 5:6]  # ties across the k-th position
    for rows in (score, score.t()[: max(1, shape[1] // 2)].t()):  # contiguous and strided
        for k in {1, rows.shape[1] // 2 or 1, rows.shape[1]}:
            expected = torch.kthvalue(rows, k, dim=1, keepdim=True).values
            got = kth_smallest(rows, k)
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert torch.equal(got, expected), (k, rows.stride())
            _, tied = select_kth(rows, k)  # the k-th value occurs again after the k smallest
            assert torch.equal(tied, (rows <= expected).sum(dim=1) > k), (k, rows.stride())


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4), (5, 16), (7, 32)])
@pytest.mark.parametrize("tied", [True, False], ids=["tied", "distinct"])
def test_nm_equals_stable_sort_reference(n, m, tied):
    """Pairwise ranking (m ≤ 16) and the sort beyond it choose what a stable descending sort of each group
    chooses: the n highest, equal scores kept lowest index first."""
    g = torch.Generator().manual_seed(m * 10 + n)
    score = torch.randint(0, 3, (12, 4 * m), generator=g).float() if tied else torch.rand(12, 4 * m, generator=g)
    groups = score.reshape(12, 4, m)
    expected = torch.zeros_like(groups, dtype=torch.bool)
    for r in range(12):
        for c in range(4):
            order = sorted(range(m), key=lambda i: (-groups[r, c, i].item(), i))
            expected[r, c, order[:n]] = True
    assert torch.equal(nm_mask(score, n, m), expected.reshape(12, 4 * m))
    for c in range(4):  # SparseGPT's one group at a time, transposed: the same choice
        assert torch.equal(nm_keep_group(groups[:, c].t().contiguous(), n).t(), expected[:, c])


def test_split_selection_works_in_a_forked_child(monkeypatch):
    """The selection threads are the parent's: a child forked after they exist (a launcher, a worker pool)
    starts its own instead of queueing work for threads it does not have (which would hang)."""
    import multiprocessing

    monkeypatch.setattr(masks, "PARALLEL_MIN_ENTRIES", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        score = torch.rand(40, 30)
        expected = unstructured_mask(score, 0.5, "row")  # rows split: the parent's pool exists from here on
        assert masks._POOLS
        with multiprocessing.get_context("fork").Pool(1) as pool:
            got = pool.apply_async(unstructured_mask, (score, 0.5, "row")).get(timeout=120)
        assert torch.equal(got, expected)
    finally:
        torch.set_num_threads(threads)
