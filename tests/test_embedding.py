"""特征空间（embedding.py）：主干特征就是分类头的输入、模型的模式不变、等间隔抽样；k 近邻分数与按构造或手算的
结果一致；t-SNE 可复现、小数据也能算、太少时给中文提示；散点图的中文图例没有缺字。"""

import io
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

import course_utils as cu

pytestmark = pytest.mark.usefixtures("one_torch_thread", "chinese_font")  # 见 conftest.py

CPU = torch.device("cpu")


def _model(arch="resnet18", strategy="finetune", num_classes=3):
    torch.manual_seed(0)
    return cu.build_model(arch, num_classes=num_classes, strategy=strategy, weights=None)


def _image_loader(n=6, size=32, batch_size=4):
    torch.manual_seed(1)
    images, labels = torch.randn(n, 3, size, size), torch.arange(n) % 3
    return images, labels, DataLoader(TensorDataset(images, labels), batch_size=batch_size)


# ---------------------------------------------------------------- 取出特征


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_backbone_features_are_the_input_of_the_head(arch):
    """特征再经过分类头，正好得到模型的输出：它们就是分类头的输入（宽度与分类头的 in_features 一致）。"""
    model = _model(arch).eval()
    images, labels, loader = _image_loader()
    features, got_labels, paths = cu.backbone_features(model, loader, CPU)
    head = cu.head_module(model)
    assert features.shape == (len(images), head.in_features) and features.dtype == np.float32
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(features)).numpy(), model(images).numpy(), rtol=1e-4, atol=1e-5)
    assert got_labels.tolist() == labels.tolist()
    assert paths == [""] * len(images)  # TensorDataset 不记录路径


def test_resnet18_features_are_512_pooled_numbers_computed_by_hand():
    model = _model().eval()
    images, _, loader = _image_loader(n=3)
    features, _, _ = cu.backbone_features(model, loader, CPU)
    body = torch.nn.Sequential(*list(model.children())[:-1])  # 去掉 fc：卷积部分 + 全局平均池化
    with torch.no_grad():
        expected = body(images).flatten(1).numpy()
    assert features.shape == (3, 512)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert (features >= 0).all()  # 池化之前是 ReLU


def _modes(model):
    return [module.training for module in model.modules()]


@pytest.mark.parametrize("strategy, train", [("finetune", True), ("finetune", False), ("freeze", True)])
def test_backbone_features_leave_every_layer_in_its_mode(strategy, train):
    model = _model(strategy=strategy).train(train)
    before = _modes(model)
    if strategy == "freeze":  # 冻结的主干在 train() 之后仍是 eval，只有分类头在训练模式
        assert model.training and not model.layer1.training and cu.head_module(model).training
    cu.backbone_features(model, _image_loader()[2], CPU)
    assert _modes(model) == before


def test_features_do_not_depend_on_the_mode_they_were_called_in():
    """BatchNorm 在训练模式下会用批次统计量并改写 running_mean：提取特征必须在评估模式下进行。"""
    model = _model()
    loader = _image_loader()[2]
    running_mean = model.bn1.running_mean.clone()
    in_train_mode, _, _ = cu.backbone_features(model.train(), loader, CPU)
    in_eval_mode, _, _ = cu.backbone_features(model.eval(), loader, CPU)
    np.testing.assert_array_equal(in_train_mode, in_eval_mode)
    assert torch.equal(model.bn1.running_mean, running_mean)


def _sorted_image_folder(root, classes=("苹果", "香蕉", "西瓜", "草莓"), per_class=5):
    """按类别排好的小图片文件夹（像测试集 val/ 那样）：每类几张不同亮度的纯色图。"""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 12), (40 * c, 20 * i, 100)).save(root / name / f"{i}.png")
    return cu.image_folder(root, transform=transforms.Compose([transforms.Resize(32), transforms.ToTensor()]))


def test_max_images_takes_evenly_spaced_images_from_every_class(tmp_path):
    dataset = _sorted_image_folder(tmp_path)
    loader = DataLoader(dataset, batch_size=3, shuffle=False)
    model = _model(num_classes=4)
    everything, all_labels, all_paths = cu.backbone_features(model, loader, CPU)
    assert len(everything) == len(dataset) == 20
    assert all_paths == [path for path, _ in dataset.samples]

    features, labels, paths = cu.backbone_features(model, loader, CPU, max_images=8)
    assert features.shape == (8, 512)
    assert sorted(set(labels.tolist())) == [0, 1, 2, 3]  # 不是只取前两个类别
    picked = [all_paths.index(path) for path in paths]
    assert picked == sorted(picked) and picked[0] == 0 and picked[-1] == 19
    np.testing.assert_allclose(features, everything[picked], rtol=1e-5, atol=1e-6)
    assert labels.tolist() == all_labels[picked].tolist()
    assert [dataset.classes[label] for label in labels] == [Path(p).parent.name for p in paths]
    assert len(cu.backbone_features(model, loader, CPU, max_images=100)[0]) == 20
    with pytest.raises(ValueError, match="正整数"):
        cu.backbone_features(model, loader, CPU, max_images=0)


def test_checkpoint_features_use_the_checkpoint_image_size(tmp_path, monkeypatch):
    """11 的捷径：加载检查点，按检查点里的尺寸（24，不是档位的 32）预处理测试集，再取特征。"""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    settings = cu.resolve_settings("smoke")
    splits = cu.make_datasets(settings, cu.prepare_dataset(settings))
    model = _model(strategy="freeze", num_classes=len(splits.class_names))
    meta = {**cu.training_meta(settings.replace(image_size=24, resize_size=28), splits.class_names),
            "arch": "resnet18", "strategy": "freeze", "num_classes": len(splits.class_names)}
    cu.save_checkpoint(cu.checkpoint_path("smoke", "freeze"), model, meta)

    features, labels, got_meta = cu.checkpoint_features(settings, "freeze", CPU, max_images=6)
    assert got_meta["image_size"] == 24 and features.shape == (6, 512)
    test_ds = splits.test_ds.with_transform(cu.build_eval_transform(24, 28))
    expected, expected_labels, _ = cu.backbone_features(model.eval(), DataLoader(test_ds, batch_size=8), CPU,
                                                        max_images=6)
    np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-5)
    assert labels.tolist() == expected_labels.tolist()


def test_weights_label_says_imagenet_only_when_imagenet_weights_were_loaded():
    model = _model()
    assert cu.weights_label(model) == "随机初始化"
    model.course_info.update(weights="IMAGENET1K_V1", weights_note="已加载 ImageNet 预训练权重（IMAGENET1K_V1，来自本机缓存）。")
    assert cu.weights_label(model) == "ImageNet 预训练权重"
    model.course_info.update(weights="/tmp/x.pth", weights_note="已加载预训练权重（来源无法核实），来自本地文件 x.pth。")
    assert cu.weights_label(model) == "预训练权重"


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
    assert cu.separation_score(features, labels) == 1.0  # 按构造：邻居全部同类
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(400, 16))  # 没有任何结构的特征，标签随机：两类均衡时的机会水平是 1/2
    shuffled = rng.permutation(np.repeat([0, 1], 200))
    assert abs(cu.separation_score(noise, shuffled) - 0.5) < 0.08
    assert cu.separation_score(features, rng.permutation(labels)) < 0.75


def test_separation_score_matches_a_hand_computed_nearest_neighbour_vote():
    """k=1：每一折里，每个点的类别取训练折中余弦距离最近的那个点的类别。"""
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2], 6)
    features = rng.normal(size=(18, 5)) + labels[:, None] * 0.8
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    correct = 0
    for train, test in StratifiedKFold(n_splits=5, shuffle=True, random_state=7).split(features, labels):
        nearest = np.argmax(unit[test] @ unit[train].T, axis=1)  # 余弦相似度最大 = 余弦距离最小
        correct += (labels[train][nearest] == labels[test]).mean()
    assert cu.separation_score(features, labels, k=1, seed=7) == pytest.approx(correct / 5)


def test_separation_table_has_one_row_per_model_and_a_most_frequent_class_baseline():
    features, labels = _blobs()
    rng = np.random.default_rng(2)
    table = cu.separation_table({"好特征": features, "随机特征": rng.normal(size=features.shape)}, labels)
    assert list(table.index) == ["好特征", "随机特征"]
    assert table.loc["好特征", "k 近邻准确率"] == cu.separation_score(features, labels)
    assert table.loc["好特征", "特征维数"] == 16
    # 两类各 40 个、分层 5 折：每个测试折两类各 8 个，总猜一类正好对一半
    assert (table["基线：总猜最多的类"] == 0.5).all()


def test_too_few_images_per_class_gets_a_chinese_hint():
    with pytest.raises(ValueError, match="每类至少 2 张"):
        cu.separation_score(np.ones((4, 3)), [0, 1, 2, 2])
    with pytest.raises(ValueError, match="行数与标签个数相同"):
        cu.separation_score(np.ones((4, 3)), [0, 1])


# ---------------------------------------------------------------- t-SNE


def test_tsne_is_reproducible_for_a_seed_and_handles_a_tiny_set():
    features, _ = _blobs(n_per_class=15)
    first = cu.tsne_2d(features, seed=3)
    assert first.shape == (30, 2)
    np.testing.assert_array_equal(first, cu.tsne_2d(features, seed=3))
    tiny = cu.tsne_2d(features[:5], seed=0)  # 默认困惑度 (5 − 1) / 3
    assert tiny.shape == (5, 2) and np.isfinite(tiny).all()


def test_tsne_keeps_separated_blobs_apart():
    features, labels = _blobs(n_per_class=20)
    points = cu.tsne_2d(features)
    # 平面上每个点离自己那一团的中心比离另一团的中心近
    centres = np.stack([points[labels == c].mean(axis=0) for c in (0, 1)])
    nearest = np.argmin(((points[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    assert (nearest == labels).all()


def test_tsne_explains_in_chinese_when_there_are_too_few_points_or_the_perplexity_is_too_large():
    with pytest.raises(ValueError, match="至少需要 5 张图"):
        cu.tsne_2d(np.ones((4, 8)))
    with pytest.raises(ValueError, match="困惑度"):
        cu.tsne_2d(np.random.default_rng(0).normal(size=(10, 8)), perplexity=10)


# ---------------------------------------------------------------- 画图


def _render_without_missing_glyphs(fig):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 缺字警告（Glyph … missing from font）变成异常
        for fmt in ("png", "svg"):
            fig.savefig(io.BytesIO(), format=fmt)


def test_plot_embedding_has_a_legend_of_chinese_class_names_and_no_missing_glyphs():
    class_names = ["苹果-红", "香蕉", "西瓜"]
    points = np.random.default_rng(0).normal(size=(9, 2))
    fig = cu.plot_embedding(points, np.array([0, 1, 2] * 3), class_names, title="t-SNE：微调全部层")
    legend = fig.axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == class_names
    assert fig.axes[0].get_title() == "t-SNE：微调全部层"
    assert len(fig.axes[0].collections[0].get_offsets()) == 9
    _render_without_missing_glyphs(fig)
    plt.close(fig)


def test_plot_embeddings_share_one_legend_and_thirty_classes_stay_distinguishable():
    class_names = [f"水果{i}" for i in range(30)]
    labels = np.arange(60) % 30
    rng = np.random.default_rng(0)
    fig = cu.plot_embeddings({name: rng.normal(size=(60, 2)) for name in ("训练前", "冻结", "微调")}, labels, class_names)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["训练前", "冻结", "微调"]
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    assert [text.get_text() for text in legend.get_texts()] == class_names
    styles = {(tuple(h.get_color()), h.get_marker()) for h in legend.legend_handles}
    assert len(styles) == 30  # 每一类的（颜色, 形状）都不同
    _render_without_missing_glyphs(fig)
    plt.close(fig)


def test_up_to_twenty_classes_each_get_their_own_colour():
    class_names = [f"水果{i}" for i in range(12)]  # demo 数据集的类别数
    fig = cu.plot_embedding(np.zeros((12, 2)), np.arange(12), class_names, title="十二类")
    colours = {tuple(h.get_color()) for h in fig.axes[0].get_legend().legend_handles}
    assert len(colours) == 12  # 不只靠形状区分
    plt.close(fig)


def test_a_legend_lists_only_the_classes_that_are_present():
    fig = cu.plot_embedding(np.zeros((4, 2)), np.array([0, 0, 2, 2]), ["苹果", "香蕉", "西瓜"], title="部分类别")
    assert [text.get_text() for text in fig.axes[0].get_legend().get_texts()] == ["苹果", "西瓜"]
    plt.close(fig)
