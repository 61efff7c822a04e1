"""数据集划分、ImageFolder、DataLoader、预处理、类别映射和数据相关的图。"""

import json
import sys

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import course_utils as cu
from course_utils.data import DatasetError

matplotlib.use("Agg")

CLASSES = ["苹果-红", "苹果-青", "香蕉"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """3 类、每类 train 20 张、val 4 张的小数据集，再加上各种不该变成类别的垃圾目录。"""
    root = cu.generate_demo_dataset(tmp_path_factory.mktemp("d") / "ds", classes=CLASSES, train_per_class=20,
                                    test_per_class=4, image_size=40, seed=11)
    for split in ("train", "val"):
        for junk in (".ipynb_checkpoints", "__MACOSX", ".hidden"):
            (root / split / junk).mkdir()
            Image.new("RGB", (40, 40)).save(root / split / junk / "x.jpg")
        (root / split / ".DS_Store").write_bytes(b"\x00")
    (root / "train" / "香蕉" / ".ipynb_checkpoints").mkdir()
    Image.new("RGB", (40, 40)).save(root / "train" / "香蕉" / ".ipynb_checkpoints" / "0001-checkpoint.jpg")
    Image.new("RGB", (40, 40)).save(root / "train" / "香蕉" / "._0001.jpg")  # macOS 的 AppleDouble 文件
    return root


def _settings(**changes):
    base = dict(image_size=32, resize_size=36, val_fraction=0.25, per_class_limit=None, seed=42, batch_size=8,
                num_workers=0)
    base.update(changes)
    return cu.resolve_settings("smoke").replace(**base)


def _per_class(ds):
    return np.bincount(ds.targets, minlength=len(CLASSES)).tolist()


def test_junk_folders_never_become_classes_or_samples(root):
    folder = cu.image_folder(root / "train")
    assert folder.classes == sorted(CLASSES)
    assert len(folder) == 60
    assert not any(".ipynb_checkpoints" in p or "/._" in p for p, _ in folder.samples)


def test_stratified_split_sizes_disjoint_and_reproducible(root):
    splits = cu.make_datasets(_settings(), root)
    assert _per_class(splits.val_ds) == [5, 5, 5]  # 每类 20 × 25%
    assert _per_class(splits.train_ds) == [15, 15, 15]
    train_idx, val_idx = set(splits.train_ds.indices), set(splits.val_ds.indices)
    assert not train_idx & val_idx and len(train_idx | val_idx) == 60
    again = cu.make_datasets(_settings(), root)
    assert again.val_ds.indices == splits.val_ds.indices  # 同一个种子，同样的划分
    other = cu.make_datasets(_settings(seed=7), root)
    assert other.val_ds.indices != splits.val_ds.indices
    assert len(splits.test_ds) == 12 and _per_class(splits.test_ds) == [4, 4, 4]


def test_val_and_test_use_the_eval_transform_and_class_maps_agree(root):
    splits = cu.make_datasets(_settings(), root)
    steps = [type(t).__name__ for t in splits.val_ds.transform.transforms]
    assert steps[:2] == ["Resize", "CenterCrop"]
    assert [type(t).__name__ for t in splits.train_ds.transform.transforms][0] == "RandomResizedCrop"
    assert splits.test_ds.transform is splits.val_ds.transform
    assert torch.equal(splits.val_ds[0][0], splits.val_ds[0][0])  # 评估预处理没有随机性
    assert splits.class_to_idx == splits.test_ds.class_to_idx == splits.train_ds.class_to_idx
    assert splits.class_names == sorted(CLASSES)
    path, label = splits.test_ds.samples[0]
    assert path.endswith(".jpg") and splits.class_names[label] in path
    assert splits.val_ds.samples[0] == splits.train_ds.dataset.samples[splits.val_ds.indices[0]]
    assert splits.summary()["图片数"].tolist() == [45, 15, 12]
    assert splits.counts().loc["香蕉"].tolist() == [15, 5, 4]


def test_quick_profile_takes_a_fixed_subset_per_class_and_keeps_the_test_set(root):
    splits = cu.make_datasets(_settings(per_class_limit=8), root)
    assert [a + b for a, b in zip(_per_class(splits.train_ds), _per_class(splits.val_ds))] == [8, 8, 8]
    assert len(splits.test_ds) == 12
    again = cu.make_datasets(_settings(per_class_limit=8), root)
    assert again.train_ds.indices == splits.train_ds.indices


def test_class_sets_must_match_between_splits(tmp_path):
    root = cu.generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=4,
                                    test_per_class=1, image_size=32, seed=0)
    (root / "val" / "柠檬" / "0001.jpg").rename(root / "0001.jpg")
    (root / "val" / "柠檬").rmdir()
    with pytest.raises(DatasetError, match="train/ 和 val/ 类别不一致.*只在 train/ 里有 \\['柠檬'\\]"):
        cu.make_datasets(_settings(), root)


def test_a_class_with_one_image_cannot_be_split(tmp_path):
    root = cu.generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=1,
                                    test_per_class=1, image_size=32, seed=0)
    with pytest.raises(DatasetError, match="无法分层划分验证集"):
        cu.make_datasets(_settings(), root)


def test_every_image_mode_is_loaded_as_rgb(tmp_path):
    base = cu.draw_fruit_image("柠檬", 40, np.random.default_rng(0))
    folder = tmp_path / "train" / "柠檬"
    folder.mkdir(parents=True)
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.convert("L").save(folder / "gray.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("P").save(folder / "palette.png", transparency=0)
    Image.new("I;16", (40, 40)).save(folder / "deep.png")
    dataset = cu.image_folder(tmp_path / "train", transform=cu.build_eval_transform(32, 36))
    assert len(dataset) == 5
    for image, label in dataset:
        assert image.shape == (3, 32, 32) and label == 0
    assert cu.load_rgb_image(folder / "rgba.png").mode == "RGB"


def test_loaders_batch_size_seeded_shuffle_and_workers(root):
    splits = cu.make_datasets(_settings(), root)
    loaders = cu.make_loaders(splits, _settings(), torch.device("cpu"))
    images, labels = next(iter(loaders.train))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and type(images) is torch.Tensor
    assert loaders.train.batch_size == 8 and not loaders.train.pin_memory
    fresh = cu.make_loaders(splits, _settings(), "cpu").train
    first, second = ([labels.tolist() for _, labels in fresh] for _ in range(2))
    again = [labels.tolist() for _, labels in cu.make_loaders(splits, _settings(), "cpu").train]
    assert first == again and first != second  # 顺序由种子决定，每一轮又各不相同
    other = [labels.tolist() for _, labels in cu.make_loaders(splits, _settings(seed=1), "cpu").train]
    assert first != other
    assert [labels.tolist() for _, labels in loaders.test] == [[0] * 4 + [1] * 4, [2] * 4]  # 测试集不打乱
    with_workers = cu.make_loaders(splits, _settings(num_workers=64), "cpu")
    assert 0 < with_workers.num_workers <= (len(__import__("os").sched_getaffinity(0)))  # 不超过 CPU 核数
    assert with_workers.train.persistent_workers
    assert sum(len(y) for _, y in with_workers.val) == 15


def test_safe_num_workers(monkeypatch):
    import multiprocessing

    assert 0 <= cu.safe_num_workers() <= 4
    monkeypatch.setattr(sys, "platform", "win32")
    assert cu.safe_num_workers() == 0
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert cu.safe_num_workers() == 0  # Jupyter + spawn：子进程不安全
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    assert cu.safe_num_workers(max_workers=1) <= 1


def test_transforms_normalize_and_denormalize():
    train_tf, eval_tf = cu.build_transforms(image_size=48, resize_size=56)
    mean_color = tuple(round(m * 255) for m in cu.IMAGENET_MEAN)
    out = eval_tf(Image.new("RGB", (80, 60), mean_color))
    assert out.shape == (3, 48, 48) and out.abs().max() < 0.02  # ImageNet 均值色归一化后约为 0
    assert train_tf(Image.new("RGB", (80, 60))).shape == (3, 48, 48)
    x = torch.rand(2, 3, 8, 8)
    normalized = (x - torch.tensor(cu.IMAGENET_MEAN)[:, None, None]) / torch.tensor(cu.IMAGENET_STD)[:, None, None]
    assert torch.allclose(cu.denormalize(normalized), x, atol=1e-6)
    assert cu.denormalize(normalized[0]).shape == (3, 8, 8)
    styled = cu.describe_transform(train_tf)
    table = styled.data
    assert table["步骤"].tolist() == ["RandomResizedCrop", "RandomHorizontalFlip", "ToImage", "ToDtype", "Normalize"]
    assert (table["作用"] != "").all()
    assert "ratio=(0.75, 1.333)" in table.loc[0, "参数"]  # 长小数缩短
    html = styled.to_html()
    assert "模型见到不同位置和大小的水果" in html and "..." not in html  # 长文字完整显示，不被截断
    assert cu.pixels_by_channel(normalized).shape == (3, 2 * 8 * 8)
    stats = cu.channel_stats(normalized)
    assert list(stats.index) == ["R（红）", "G（绿）", "B（蓝）"]
    expected = normalized.transpose(0, 1).reshape(3, -1).mean(1)
    assert np.allclose(stats["均值"], expected.numpy(), atol=1e-3)


def test_class_maps_are_saved_like_the_tutorial(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    path = cu.save_class_maps(["苹果-红", "香蕉"], "smoke")
    assert path == tmp_path / "smoke" / "metrics" / "class_to_idx.json"
    assert json.loads(path.read_text(encoding="utf-8")) == {"苹果-红": 0, "香蕉": 1}
    assert np.load(path.parent / "idx_to_labels.npy", allow_pickle=True).item() == {0: "苹果-红", 1: "香蕉"}
    assert np.load(path.parent / "labels_to_idx.npy", allow_pickle=True).item() == {"苹果-红": 0, "香蕉": 1}
    assert cu.load_class_names("smoke") == ["苹果-红", "香蕉"]
    with pytest.raises(FileNotFoundError, match="笔记本 03"):
        cu.load_class_names("demo")


def test_browsing_helpers(root):
    tree = str(cu.directory_tree(root, max_depth=2, max_entries=2))
    assert tree.splitlines()[:3] == ["ds/", "├── train/", "│   ├── 苹果-红/  （20 项）"]
    assert "│   └── …… 还有 1 项" in tree and "└── val/" in tree
    assert ".ipynb_checkpoints" not in tree and "__MACOSX" not in tree and ".DS_Store" not in tree
    counts = cu.class_counts(root)
    assert counts.loc["香蕉"].tolist() == [20, 4] and ".ipynb_checkpoints" not in counts.index
    table = cu.image_table(root)
    assert len(table) == 72 and set(table["宽"]) == {40} and set(table["宽高比"]) == {1.0}
    picked = cu.sample_images(root, per_class=2, seed=0)
    assert len(picked) == 6 and picked == cu.sample_images(root, per_class=2, seed=0)


@pytest.fixture
def chinese_font():
    """注册课程的中文字体（只在本测试内有效），图里的中文不会缺字。"""
    with matplotlib.rc_context():
        cu.setup_chinese_font()
        yield


def test_figures(root, chinese_font):
    import warnings

    import matplotlib.pyplot as plt

    warnings.simplefilter("error", UserWarning)  # 缺字（Glyph … missing）会变成错误

    splits = cu.make_datasets(_settings(), root)
    images, labels = next(iter(cu.make_loaders(splits, _settings(), "cpu").train))
    paths = [p for p, _ in cu.sample_images(root, per_class=1)]
    varied = cu.image_table(root)
    varied.loc[0, "宽"] = 64  # 尺寸不全相同才画图
    figures = {
        "grid": cu.show_images(paths, ["一", "二", "三"], ncols=2),
        "batch": cu.show_batch(images, labels, splits.class_names, n=6),
        "counts": cu.plot_class_counts(cu.class_counts(root)),
        "sizes": cu.plot_image_sizes(varied),
        "aug": cu.show_augmentations(paths[0], 32, 36, n_random=2),
        "hist": cu.plot_pixel_histogram(cu.denormalize(images), images),
    }
    legend = figures["counts"].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train/（训练 + 验证）", "val/（测试集）"]
    figures["counts"].canvas.draw()
    legend_box, axes_box = legend.get_window_extent(), figures["counts"].axes[0].get_window_extent()
    assert legend_box.x0 >= axes_box.x1  # 图例在坐标区右侧，不挡住条形
    assert len(figures["sizes"].axes) == 2
    titled = [ax.get_title() for ax in figures["grid"].axes if ax.get_title()]
    assert titled == ["一", "二", "三"] and len(figures["grid"].axes) == 4
    assert [ax.get_title() for ax in figures["batch"].axes] == [splits.class_names[int(y)] for y in labels[:6]]
    assert len([ax for ax in figures["aug"].axes if ax.get_title()]) == 1 + 2 + 1 + 1 + 1
    for fig in figures.values():
        plt.close(fig)
    with pytest.raises(ValueError, match="没有可以显示的图片"):
        cu.show_images([])


def test_uniform_image_sizes_give_one_sentence_instead_of_a_chart(root, capsys):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    assert cu.plot_image_sizes(cu.image_table(root)) is None
    assert plt.get_fignums() == before  # 没有画出只有一个点的图
    assert capsys.readouterr().out.startswith("全部 72 张图片都是 40×40 像素")


def test_augmentation_figure_is_reproducible_and_leaves_the_global_rng_alone(root, chinese_font):
    import matplotlib.pyplot as plt

    path = cu.sample_images(root, per_class=1)[0][0]
    torch.manual_seed(123)
    state = torch.get_rng_state()
    pixels = []
    for _ in range(2):
        fig = cu.show_augmentations(path, 32, 36, n_random=2, seed=5)
        pixels.append([np.asarray(ax.images[0].get_array()) for ax in fig.axes if ax.images])
        plt.close(fig)
    assert torch.equal(torch.get_rng_state(), state)  # 全局随机数状态没有被改动
    assert all(np.array_equal(a, b) for a, b in zip(*pixels))  # 同一个 seed，同样的随机裁剪
    other = cu.show_augmentations(path, 32, 36, n_random=2, seed=6)
    crops = [np.asarray(ax.images[0].get_array()) for ax in other.axes if ax.images][1:3]
    plt.close(other)
    assert not all(np.array_equal(a, b) for a, b in zip(crops, pixels[0][1:3]))
