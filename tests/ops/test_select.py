import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.config import SelectConfig
from curate.ops.select import box_iou, containment, grow_to_min_size, select_salient_boxes, window_origins

CFG = SelectConfig()


def cluster(cx, cy, n, size=8, spread=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.stack([cx + rng.uniform(-spread, spread, n), cy + rng.uniform(-spread, spread, n)], 1)
    boxes = np.concatenate([centres - size / 2, centres + size / 2], axis=1)
    return boxes, np.full(n, float(size * size))


def test_picks_the_dense_cluster_of_small_masks_first():
    dense_b, dense_a = cluster(700, 300, 40)
    sparse_b, sparse_a = cluster(200, 600, 5, spread=150, seed=1)
    big_b = np.array([[0, 0, 1000, 800]], dtype=float)
    boxes = np.concatenate([dense_b, sparse_b, big_b])
    areas = np.concatenate([dense_a, sparse_a, [800_000.0]])
    picked = select_salient_boxes(boxes, areas, 1000, 800, CFG)
    x0, y0, x1, y1 = picked[0].box
    assert x0 <= 700 <= x1 and y0 <= 300 <= y1
    assert picked[0].n_masks >= 40


def test_no_masks_gives_no_boxes():
    assert select_salient_boxes(np.zeros((0, 4)), np.zeros(0), 800, 600, CFG) == []


def test_window_origins_cover_the_far_edge():
    assert list(window_origins(100, 30, 20)) == [0, 20, 40, 60, 70]
    assert list(window_origins(20, 30, 5)) == [0]


def test_grow_to_min_size_stays_inside():
    grown = grow_to_min_size(np.array([0.0, 0.0, 10.0, 10.0]), 64, 100, 50)
    assert grown[0] == 0 and grown[2] == 64 and grown[1] == 0 and grown[3] == 50


masks_strategy = st.integers(min_value=0, max_value=120).flatmap(
    lambda n: st.tuples(
        st.lists(st.tuples(st.floats(0, 0.98), st.floats(0, 0.98), st.floats(0.003, 0.3), st.floats(0.003, 0.3)),
                 min_size=n, max_size=n),
        st.integers(300, 3000), st.integers(300, 3000),
    )
)


def to_arrays(spec):
    rel, width, height = spec
    if not rel:
        return np.zeros((0, 4)), np.zeros(0), width, height
    r = np.array(rel)
    x0, y0 = r[:, 0] * width, r[:, 1] * height
    x1 = np.minimum(x0 + r[:, 2] * width, width)
    y1 = np.minimum(y0 + r[:, 3] * height, height)
    boxes = np.stack([x0, y0, x1, y1], 1)
    return boxes, (x1 - x0) * (y1 - y0), width, height


@settings(max_examples=60, deadline=None)
@given(masks_strategy, st.integers(1, 6), st.floats(0.0, 0.6), st.floats(0.0, 1.0), st.booleans(), st.booleans())
def test_boxes_inside_at_most_k_and_overlap_capped(spec, k, nms_iou, max_containment, expand, spread):
    boxes, areas, width, height = to_arrays(spec)
    cfg = SelectConfig(max_boxes=k, nms_iou=nms_iou, max_containment=max_containment, expand_to_members=expand,
                       spread=spread)
    picked = select_salient_boxes(boxes, areas, width, height, cfg)
    assert len(picked) <= k
    arr = np.array([p.box for p in picked], dtype=float).reshape(-1, 4)
    for i, (x0, y0, x1, y1) in enumerate(arr):
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert all(isinstance(v, int) for v in picked[i].box)
        if i:
            assert box_iou(arr[i], arr[:i]).max() <= nms_iou + 1e-9
            assert containment(arr[i], arr[:i]).max() <= max_containment + 1e-9  # no box mostly inside another


def test_a_small_box_inside_a_big_one_is_refused():
    big, small = np.array([0.0, 0, 400, 400]), np.array([[100.0, 100, 160, 160]])
    assert box_iou(big, small)[0] < 0.05 and containment(big, small)[0] == 1.0  # IoU alone would keep both


def test_spread_sends_the_next_box_to_another_cluster():
    # one tight, very dense cluster and three light ones: without spread, adjacent tiles of the dense
    # cluster (overlapping each other little) outscore the light clusters
    dense_b, dense_a = cluster(450, 450, 600, size=6, spread=300)
    light = [cluster(x, y, 10, size=6, spread=30, seed=i) for i, (x, y) in enumerate([(1500, 300), (1600, 1000),
                                                                                        (1250, 1130)])]
    boxes = np.concatenate([dense_b] + [b for b, _ in light])
    areas = np.concatenate([dense_a] + [a for _, a in light])

    def on_dense(cfg):
        return sum(b.box[2] <= 800 and b.box[3] <= 800 for b in select_salient_boxes(boxes, areas, 2000, 1200, cfg))

    assert on_dense(SelectConfig(spread=False)) >= 2
    assert on_dense(SelectConfig(spread=True)) == 1
    assert len(select_salient_boxes(boxes, areas, 2000, 1200, SelectConfig(spread=True))) == 4
    # more boxes than clusters: the rest are filled as without spread, none is lost
    for k in (6, 9):
        with_spread = select_salient_boxes(boxes, areas, 2000, 1200, SelectConfig(spread=True, max_boxes=k))
        assert len(with_spread) == len(select_salient_boxes(boxes, areas, 2000, 1200,
                                                            SelectConfig(spread=False, max_boxes=k)))


@settings(max_examples=40, deadline=None)
@given(masks_strategy, st.randoms(use_true_random=False))
def test_invariant_to_mask_order(spec, rnd):
    boxes, areas, width, height = to_arrays(spec)
    order = list(range(len(areas)))
    rnd.shuffle(order)
    assert select_salient_boxes(boxes, areas, width, height, CFG) == select_salient_boxes(
        boxes[order], areas[order], width, height, CFG)


def test_scaling_the_image_scales_the_boxes():
    boxes, areas = cluster(300, 200, 30, size=6, spread=25)
    more_b, more_a = cluster(120, 420, 12, size=10, spread=40, seed=3)
    boxes, areas = np.concatenate([boxes, more_b]), np.concatenate([areas, more_a])
    cfg = SelectConfig(min_box_px=16)
    small = select_salient_boxes(boxes, areas, 600, 500, cfg)
    large = select_salient_boxes(boxes * 4, areas * 16, 2400, 2000, SelectConfig(min_box_px=64))
    assert len(small) == len(large) > 0
    for s, big in zip(small, large):
        assert np.allclose(np.array(s.box) * 4, big.box, atol=8)  # integer snapping and stride rounding
