"""03 写出来的预处理、ImageFolder 划分和 DataLoader，course_data 把它们合在一起，以及数据相关的图。"""

import os
import sys

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

import course_utils as cu
from course_utils.data import DatasetError
from course_utils.demo import draw_fruit_image, generate_demo_dataset
from course_utils.files import IMAGE_EXTENSIONS, load_rgb_image

matplotlib.use("Agg")

CLASSES = ["苹果-红", "苹果-青", "香蕉"]
HALF = [0.5, 0.5, 0.5]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """3 类、每类 train 20 张、val 4 张的小数据集。"""
    return generate_demo_dataset(tmp_path_factory.mktemp("d") / "ds", classes=CLASSES, train_per_class=20,
                                 test_per_class=4, image_size=40, seed=11)


def _settings(root, **changes):
    base = dict(dataset=str(root), image_size=32, resize_size=36, val_fraction=0.25, per_class_limit=None, seed=42,
                batch_size=8, num_workers=0)
    return cu.resolve_settings("smoke").replace(**{**base, **changes})


def _splits(root, seed=42):
    train_tf, eval_tf = cu.build_transforms(32, 36, HALF, HALF)
    return cu.make_datasets(root, train_tf, eval_tf, 0.25, seed)


def _per_class(subset):
    targets = np.asarray(subset.dataset.targets)[subset.indices]
    return np.bincount(targets, minlength=len(CLASSES)).tolist()


def test_stratified_split_sizes_disjoint_and_reproducible(root):
    train_ds, val_ds, test_ds = _splits(root)
    assert _per_class(val_ds) == [5, 5, 5] and _per_class(train_ds) == [15, 15, 15]  # 每类 20 × 25%
    assert not set(train_ds.indices) & set(val_ds.indices) and len(train_ds) + len(val_ds) == 60
    assert _splits(root)[1].indices == val_ds.indices  # 同一个种子，同样的划分
    assert _splits(root, seed=7)[1].indices != val_ds.indices
    assert len(test_ds) == 12 and test_ds.classes == sorted(CLASSES)


def test_validation_and_test_use_the_fixed_eval_transform(root):
    train_ds, val_ds, test_ds = _splits(root)
    assert [type(t).__name__ for t in val_ds.dataset.transform.transforms][:2] == ["Resize", "CenterCrop"]
    assert type(train_ds.dataset.transform.transforms[0]).__name__ == "RandomResizedCrop"
    assert torch.equal(val_ds[0][0], val_ds[0][0])  # 评估预处理没有随机性
    assert val_ds.dataset.samples == train_ds.dataset.samples  # 同一批文件，只是预处理不同
    path, label = test_ds.samples[0]
    assert path.endswith(".jpg") and test_ds.classes[label] in path


def test_eval_transform_matches_the_weights_own_transforms():
    """03 的练习 1：按权重记下的尺寸和均值方差写出的评估预处理，与 torchvision 权重自带的 transforms() 结果相同。"""
    from torchvision import models

    preset = models.ResNet18_Weights.IMAGENET1K_V1.transforms()
    _, eval_tf = cu.build_transforms(224, 256, preset.mean, preset.std)
    image = draw_fruit_image("柠檬", 300, np.random.default_rng(0))
    assert (eval_tf(image) - preset(image)).abs().max() < 1e-4


def test_transforms_normalize_and_denormalize():
    train_tf, eval_tf = cu.build_transforms(48, 56, HALF, HALF)
    out = eval_tf(Image.new("RGB", (80, 60), (128, 128, 128)))
    assert out.shape == (3, 48, 48) and out.abs().max() < 0.01  # 0.5 的灰色归一化后约为 0
    assert train_tf(Image.new("RGB", (80, 60))).shape == (3, 48, 48)
    x = torch.rand(2, 3, 8, 8)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    normalized = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    assert torch.allclose(cu.denormalize(normalized, mean, std), x, atol=1e-6)
    assert cu.denormalize(normalized[0], mean, std).shape == (3, 8, 8)


def test_course_data_is_03_in_one_call_and_quick_takes_a_fixed_subset(root):
    data = cu.course_data(_settings(root), mean=HALF, std=HALF)
    assert data.class_names == sorted(CLASSES) and (len(data.train_ds), len(data.val_ds), len(data.test_ds)) == (45, 15, 12)
    quick = cu.course_data(_settings(root, per_class_limit=6), mean=HALF, std=HALF)
    assert _per_class(quick.train_ds) == [6, 6, 6] and _per_class(quick.val_ds) == [2, 2, 2]  # 6 × 25% / 75%
    assert len(quick.test_ds) == 12  # 测试集不变
    assert cu.course_data(_settings(root, per_class_limit=6), mean=HALF, std=HALF).train_ds.indices == quick.train_ds.indices
    few = cu.course_data(_settings(root), mean=HALF, std=HALF, train_per_class=2)
    assert _per_class(few.train_ds) == [2, 2, 2] and len(few.val_ds) == 15  # 只限训练集
    assert set(few.train_ds.indices) <= set(data.train_ds.indices)
    # 小的子集包含在大的里面，也包含在档位的子集里（06 的 freeze 各点从同一份特征里按这个挑图）
    more = cu.course_data(_settings(root), mean=HALF, std=HALF, train_per_class=4)
    assert set(few.train_ds.indices) < set(more.train_ds.indices)
    quick_few = cu.course_data(_settings(root, per_class_limit=6), mean=HALF, std=HALF, train_per_class=4)
    assert _per_class(quick_few.train_ds) == [4, 4, 4] and set(quick_few.train_ds.indices) < set(quick.train_ds.indices)
    assert quick_few.train_ds.indices == cu.data.limit_per_class(quick.train_ds, 4, _settings(root).seed)


def test_class_sets_must_match_between_splits(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=4, test_per_class=1,
                                 image_size=32, seed=0)
    (root / "val" / "柠檬" / "0001.jpg").rename(root / "0001.jpg")
    (root / "val" / "柠檬").rmdir()
    with pytest.raises(DatasetError, match="train/ 和 val/ 类别不一致.*只在 train/ 里有 \\['柠檬'\\]"):
        cu.course_data(_settings(root), mean=HALF, std=HALF)


def test_a_class_with_one_image_cannot_be_split(tmp_path):
    root = generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=1, test_per_class=1,
                                 image_size=32, seed=0)
    with pytest.raises(DatasetError, match="无法从 .* 分层划出验证集"):
        cu.course_data(_settings(root), mean=HALF, std=HALF)


@pytest.mark.parametrize("junk", [".ipynb_checkpoints", "香蕉/.ipynb_checkpoints", "香蕉/._0001.jpg", "__MACOSX"])
def test_hidden_files_that_imagefolder_would_misread_are_refused(tmp_path, junk):
    root = generate_demo_dataset(tmp_path / "d", classes=["香蕉", "柠檬"], train_per_class=4, test_per_class=1,
                                 image_size=32, seed=0)
    target = root / "train" / junk
    if target.suffix:
        target.write_bytes(b"\x00\x05AppleDouble")
    else:
        target.mkdir()
    with pytest.raises(DatasetError, match=f"隐藏或系统生成的文件：train/{junk}.*删掉它们"):
        cu.prepare_dataset(_settings(root))


def test_every_image_mode_is_loaded_as_rgb_and_the_extensions_match_torchvision(tmp_path):
    from torchvision.datasets.folder import IMG_EXTENSIONS

    assert IMAGE_EXTENSIONS == IMG_EXTENSIONS
    base = draw_fruit_image("柠檬", 40, np.random.default_rng(0))
    for mode, name in (("CMYK", "a.jpg"), ("L", "b.png"), ("RGBA", "c.png")):
        base.convert(mode).save(tmp_path / name)
        assert load_rgb_image(tmp_path / name).mode == "RGB"
    base.convert("P").save(tmp_path / "d.png", transparency=0)
    assert load_rgb_image(tmp_path / "d.png").mode == "RGB"
    assert load_rgb_image(base.convert("RGBA")).mode == "RGB"  # 已经打开的图片也行
    with pytest.raises(FileNotFoundError, match="找不到图片"):
        load_rgb_image(tmp_path / "nope.jpg")


def test_loaders_batch_size_seeded_shuffle_and_workers(root):
    splits = _splits(root)
    train, val, test = cu.make_loaders(*splits, 8, 0, 42)
    images, labels = next(iter(train))
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.float32 and type(images) is torch.Tensor
    fresh = cu.make_loaders(*splits, 8, 0, 42)[0]
    first, second = ([y.tolist() for _, y in fresh] for _ in range(2))
    again = [y.tolist() for _, y in cu.make_loaders(*splits, 8, 0, 42)[0]]
    assert first == again and first != second  # 顺序由种子决定，每一轮又各不相同
    assert first != [y.tolist() for _, y in cu.make_loaders(*splits, 8, 0, 1)[0]]
    assert [y.tolist() for _, y in test] == [[0] * 4 + [1] * 4, [2] * 4]  # 测试集不打乱
    with_workers = cu.make_loaders(*splits, 8, 1, 42)
    assert with_workers[0].persistent_workers and sum(len(y) for _, y in with_workers[1]) == 15


def test_safe_num_workers(monkeypatch):
    import multiprocessing

    assert 0 <= cu.safe_num_workers() <= 4
    monkeypatch.setattr(sys, "platform", "win32")
    assert cu.safe_num_workers() == 0
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    monkeypatch.setitem(sys.modules, "ipykernel", object())
    assert cu.safe_num_workers() == 0  # 笔记本 + spawn：子进程找不到笔记本里定义的东西
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    assert cu.safe_num_workers(max_workers=1) <= 1
    for cores, workers in {1: 0, 2: 0, 4: 2, 16: 4}.items():  # 两个核都要留给模型
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert cu.safe_num_workers() == workers


def test_sample_images_is_seeded(root):
    picked = cu.sample_images(root, per_class=2, seed=0)
    assert len(picked) == 6 and picked == cu.sample_images(root, per_class=2, seed=0)
    assert {name for _, name in picked} == set(CLASSES)


def test_figures(root, chinese_font):
    import warnings

    import matplotlib.pyplot as plt
    import pandas as pd

    warnings.simplefilter("error", UserWarning)  # 缺字（Glyph … missing）会变成错误
    data = cu.course_data(_settings(root), mean=HALF, std=HALF)
    images, labels = next(iter(data.train_loader))
    paths = [p for p, _ in cu.sample_images(root, per_class=1)]
    counts = pd.DataFrame({"train": [20, 20, 20], "val": [4, 4, 4]}, index=pd.Index(CLASSES, name="类别"))
    sizes = pd.DataFrame({"划分": ["train", "val"], "宽": [40, 64], "高": [40, 48]}).assign(宽高比=lambda t: t["宽"] / t["高"])
    figures = {
        "grid": cu.show_images(paths, ["一", "二", "三"], ncols=2),
        "batch": cu.show_batch(images, labels, data.class_names, HALF, HALF, n=6),
        "counts": cu.plot_class_counts(counts),
        "sizes": cu.plot_image_sizes(sizes),
        "aug": cu.show_augmentations(paths[0], 32, 36, n_random=2),
        "hist": cu.plot_pixel_histogram(cu.denormalize(images, HALF, HALF), images),
    }
    legend = figures["counts"].axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["train/（训练 + 验证）", "val/（测试集）"]
    figures["counts"].canvas.draw()
    assert legend.get_window_extent().x0 >= figures["counts"].axes[0].get_window_extent().x1  # 图例不挡住条形
    assert len(figures["sizes"].axes) == 2
    assert [ax.get_title() for ax in figures["grid"].axes if ax.get_title()] == ["一", "二", "三"]
    assert [ax.get_title() for ax in figures["batch"].axes] == [data.class_names[int(y)] for y in labels[:6]]
    assert len([ax for ax in figures["aug"].axes if ax.get_title()]) == 1 + 2 + 1 + 1 + 1
    for fig in figures.values():
        plt.close(fig)
    with pytest.raises(ValueError, match="没有可以显示的图片"):
        cu.show_images([])


def test_uniform_image_sizes_give_one_sentence_instead_of_a_chart(capsys):
    import matplotlib.pyplot as plt
    import pandas as pd

    before = plt.get_fignums()
    table = pd.DataFrame({"划分": ["train"] * 3, "宽": [40] * 3, "高": [40] * 3, "宽高比": [1.0] * 3})
    assert cu.plot_image_sizes(table) is None
    assert plt.get_fignums() == before  # 没有画出只有一个点的图
    assert capsys.readouterr().out.startswith("全部 3 张图片都是 40×40 像素")


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
