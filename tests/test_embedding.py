"""特征空间（embedding.py 与 11 用的 ``cu.train.backbone_features``）：两种网络的特征就是分类头的输入，按手算的结果核对；
k 近邻分数与按构造或手算的结果一致；t-SNE 可复现、小数据也能算、困惑度不对时给中文提示；散点图的中文图例没有缺字。"""

import io
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import DataLoader, TensorDataset

import course_utils as cu
from course_utils.embedding import plot_embeddings, separation_score, tsne_2d

pytestmark = pytest.mark.usefixtures("one_torch_thread", "chinese_font")  # 见 conftest.py


# ---------------------------------------------------------------- 特征：分类头的输入


@pytest.mark.parametrize("arch, width", [("resnet18", 512), ("efficientnet_lite0", 1280)])
def test_backbone_features_are_the_pooled_last_feature_map_computed_by_hand(arch, width):
    torch.manual_seed(0)
    model, head, _ = cu.build_model(arch, 3, "freeze", weights=None)
    images, labels = torch.randn(5, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1])
    features, got = cu.train.backbone_features(model, DataLoader(TensorDataset(images, labels), batch_size=2), "cpu")
    with torch.no_grad():
        if arch == "resnet18":  # 去掉 fc：卷积部分 + 全局平均池化
            expected = torch.nn.Sequential(*list(model.children())[:-1])(images).flatten(1)
        else:  # timm：forward_features 到 bn2（BN + ReLU6）为止，再全局平均池化
            expected = model.forward_features(images).mean(dim=(2, 3))
        logits = model(images)
    assert features.shape == (5, width) and torch.equal(got, labels) and cu.models.head_of(model) is head
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(head(features), logits, atol=1e-5, rtol=1e-4)  # 特征再过分类头，正好是模型的输出
    assert float(features.min()) >= 0 and float(features.max()) <= (6 if arch == "efficientnet_lite0" else np.inf)


# ---------------------------------------------------------------- 分得开吗：k 近邻分数


def _blobs(n_per_class=40, dim=16, spread=0.3, seed=0):
    """两团点，中心方向互相垂直（余弦距离看方向）：每个点最近的邻居一定是同类。"""
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim))
    centres[0, 0] = centres[1, 1] = 10.0
    labels = np.repeat([0, 1], n_per_class)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), dim)), labels


def test_well_separated_blobs_score_one_and_shuffled_labels_score_near_chance():
    features, labels = _blobs()
    assert separation_score(features, labels) == 1.0  # 按构造：邻居全部同类
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(400, 16))  # 没有任何结构的特征，标签随机：两类均衡时的机会水平是 1/2
    assert abs(separation_score(noise, rng.permutation(np.repeat([0, 1], 200))) - 0.5) < 0.08


def _hand_vote(features, labels, folds, seed):
    """k=1 的手算：每一折里，每个点的类别取训练折中余弦相似度最大（余弦距离最小）的那个点的类别。"""
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    scores = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(features, labels):
        nearest = np.argmax(unit[test] @ unit[train].T, axis=1)
        scores.append((labels[train][nearest] == labels[test]).mean())
    return np.mean(scores)


@pytest.mark.parametrize("per_class, folds", [(6, 5), (4, 4)])  # 每类只有 4 张（smoke 的测试集）时折数跟着减到 4
def test_separation_score_matches_a_hand_computed_nearest_neighbour_vote(per_class, folds):
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], per_class)
    features = rng.normal(size=(len(labels), 5)) + labels[:, None] * 0.8
    expected = _hand_vote(features, labels, folds, seed=7)
    assert 0.3 < expected < 1  # 既不是全对也不是瞎猜：比较才有意义
    assert separation_score(features, labels, k=1, seed=7) == pytest.approx(expected)


def test_too_few_images_per_class_gets_a_chinese_hint():
    with pytest.raises(ValueError, match="至少要有 2 张图"):
        separation_score(np.ones((4, 3)), np.array([0, 1, 2, 2]))


# ---------------------------------------------------------------- t-SNE


def test_tsne_is_reproducible_for_a_seed_and_handles_a_tiny_set():
    features, _ = _blobs(n_per_class=15)
    first = tsne_2d(features, seed=3)
    assert first.shape == (30, 2)
    np.testing.assert_array_equal(first, tsne_2d(features, seed=3))
    tiny = tsne_2d(features[:5], seed=0)  # 默认困惑度 (5 − 1) / 3
    assert tiny.shape == (5, 2) and np.isfinite(tiny).all()


def test_tsne_keeps_separated_blobs_apart():
    features, labels = _blobs(n_per_class=20)
    points = tsne_2d(features)
    centres = np.stack([points[labels == c].mean(axis=0) for c in (0, 1)])
    nearest = np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).all()  # 平面上每个点离自己那一团的中心更近


def test_tsne_explains_in_chinese_when_the_perplexity_is_too_large():
    with pytest.raises(ValueError, match="困惑度要大于 0、小于图片数 10"):
        tsne_2d(np.random.default_rng(0).normal(size=(10, 8)), perplexity=10)


# ---------------------------------------------------------------- 画图


def _render_without_missing_glyphs(fig):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 缺字警告（Glyph … missing from font）变成异常
        for fmt in ("png", "svg"):
            fig.savefig(io.BytesIO(), format=fmt)


def _legend_styles(legend):
    return {(tuple(h.get_color()), h.get_marker()) for h in legend.legend_handles}


def test_panels_share_one_legend_of_the_present_chinese_class_names():
    class_names = ["苹果-红", "香蕉", "西瓜"]
    labels = np.array([0, 0, 2, 2, 0])
    rng = np.random.default_rng(0)
    fig = plot_embeddings({"训练前": rng.normal(size=(5, 2)), "微调全部层": rng.normal(size=(5, 2)),
                           "从头训练": rng.normal(size=(5, 2))}, labels, class_names, suptitle="t-SNE")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["训练前", "微调全部层", "从头训练"] and len(fig.axes) == 4
    assert [len(c.get_offsets()) for c in visible[0].collections] == [3, 2]  # 每类一组点
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["苹果-红", "西瓜"]  # 只列出出现的类别
    _render_without_missing_glyphs(fig)
    plt.close(fig)


@pytest.mark.parametrize("count", [12, 30])  # demo 的 12 类每类一种颜色；fruit30 的 30 类靠颜色 × 形状
def test_every_class_gets_its_own_style(count):
    labels = np.arange(2 * count) % count
    fig = plot_embeddings({"冻结主干": np.random.default_rng(0).normal(size=(2 * count, 2))}, labels,
                          [f"水果{i}" for i in range(count)])
    (legend,) = fig.legends
    assert len(_legend_styles(legend)) == count
    if count <= 20:
        assert len({tuple(h.get_color()) for h in legend.legend_handles}) == count  # 不只靠形状区分
    _render_without_missing_glyphs(fig)
    plt.close(fig)
