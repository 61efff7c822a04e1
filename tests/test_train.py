"""训练循环与检查点：04 写出来的两个函数、fit 的检查点和续训、特征缓存、元数据检查、指标与曲线。

数据是固定种子生成的小张量（32×32），模型是随机初始化的 ResNet-18，在 2 核 CPU 上几秒跑完。
"""

import json
import os

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

import course_utils as cu
from course_utils.checkpoints import (CheckpointError, CheckpointNotFound, metrics_path, read_metrics, save_checkpoint,
                                      write_metrics)
from course_utils.train import backbone_features

NUM_CLASSES = 3
CLASS_NAMES = ["苹果-红", "香蕉", "西瓜"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py


def _tensors(n=36, size=32, seed=0):
    """三类可分的小图：每类的平均亮度不同。"""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    images = torch.randn(n, 3, size, size, generator=generator) + labels.view(-1, 1, 1, 1).float()
    return images, labels


def _loaders(seed=0, batch_size=6):
    images, labels = _tensors()
    generator = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(images[:24], labels[:24]), batch_size=batch_size, shuffle=True, generator=generator)
    val = DataLoader(TensorDataset(images[24:], labels[24:]), batch_size=batch_size)
    return train, val


def _model(strategy="finetune", seed=0, feature_cache=None):
    """(model, head, optimizer, meta)：与 04 第 10 节同样的几行。"""
    torch.manual_seed(seed)
    model, head, info = cu.build_model("resnet18", NUM_CLASSES, strategy, weights=None)
    settings = cu.resolve_settings("smoke", strategy=strategy, image_size=32, feature_cache=feature_cache)
    meta = cu.run_meta(settings, info, CLASS_NAMES)
    return model, head, cu.make_optimizer(model, head, strategy, 0.01), meta


def _fit(parts, train, val, **kwargs):
    model, head, optimizer, meta = parts
    return cu.fit(model, head, train, val, optimizer, device="cpu", meta=meta, **{"epochs": 1, **kwargs})


def _predict(model, images):
    with torch.no_grad():
        return model.eval()(images)


# ---------------------------------------------------------------- 04 写出来的两个函数


def test_evaluate_returns_logits_and_labels_matching_a_hand_computation():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))  # logits 就是输入本身
    inputs = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    labels = torch.tensor([0, 1, 1, 0])  # 前两个对，后两个错
    logits, got = cu.evaluate(model, DataLoader(TensorDataset(inputs, labels), batch_size=3), "cpu")
    assert torch.equal(logits, inputs) and torch.equal(got, labels)
    assert (logits.argmax(1) == got).float().mean().item() == 0.5
    assert not model.training and torch.is_grad_enabled()  # 评估模式；离开 no_grad 后照常求梯度


def test_train_one_epoch_returns_the_mean_loss_and_accuracy_and_honours_max_batches():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    inputs, labels = torch.randn(10, 4), torch.tensor([0, 1] * 5)
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # 学习率为 0：参数不变，结果可以手算
    with torch.no_grad():
        logits = model(inputs)
    loss, acc = cu.train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, "cpu")
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)
    assert acc == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    capped, _ = cu.train_one_epoch(model, loader, nn.CrossEntropyLoss(), optimizer, "cpu", max_batches=1)
    assert capped == pytest.approx(nn.functional.cross_entropy(logits[:4], labels[:4]).item(), rel=1e-5)


# ---------------------------------------------------------------- 检查点


def test_fit_writes_best_and_last_checkpoints_that_round_trip_with_identical_predictions(tmp_path):
    parts = _model()
    train, val = _loaders()
    history = _fit(parts, train, val, epochs=2, checkpoint_dir=tmp_path, run_name="finetune")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["finetune_best.pt", "finetune_last.pt"]
    last, meta = cu.load_checkpoint(tmp_path / "finetune_last.pt")
    assert torch.equal(_predict(last, _tensors(n=4)[0]), _predict(parts[0], _tensors(n=4)[0]))
    assert not parts[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)  # 训练完换回原来的布局
    assert meta["class_names"] == CLASS_NAMES and meta["strategy"] == "finetune" and meta["history"] == history
    assert meta["best_epoch"] in (1, 2) and {"torch", "torchvision", "python"} <= set(meta["versions"])
    raw = torch.load(tmp_path / "finetune_last.pt", weights_only=True)  # 只有张量和普通类型
    assert raw["train_state"]["epoch"] == 2 and "train_state" not in torch.load(tmp_path / "finetune_best.pt",
                                                                                 weights_only=True)


def test_save_checkpoint_refuses_metadata_that_load_checkpoint_could_not_use(tmp_path):
    model, _, _, meta = _model()
    incomplete = {k: v for k, v in meta.items() if k not in ("num_classes", "mean")}
    with pytest.raises(CheckpointError, match="缺少 num_classes（类别数）、mean（归一化的均值"):
        save_checkpoint(tmp_path / "x.pt", model, incomplete)
    with pytest.raises(CheckpointError, match="class_names 有 3 个，num_classes 却是 4"):
        save_checkpoint(tmp_path / "x.pt", model, {**meta, "num_classes": 4})
    with pytest.raises(TypeError, match=r"meta\['image_size'\] 是 Tensor"):
        save_checkpoint(tmp_path / "x.pt", model, {**meta, "image_size": torch.tensor(32)})
    assert not list(tmp_path.iterdir())  # 什么都没写


@pytest.mark.parametrize("broken", ["torch.save", "os.replace"])
def test_a_crash_while_saving_keeps_the_previous_checkpoint_and_leaves_no_temp_files(tmp_path, monkeypatch, broken):
    path = tmp_path / "finetune_best.pt"
    first, _, _, meta = _model(seed=1)
    save_checkpoint(path, first, meta)
    second = _model(seed=2)[0]

    def crash(*args, **kwargs):
        if broken == "torch.save":
            args[1].write(b"half a checkpoint")  # 写了一半才出错
        raise OSError("磁盘满了（模拟）")

    monkeypatch.setattr(torch if broken == "torch.save" else os, broken.split(".")[1], crash)
    with pytest.raises(OSError, match="模拟"):
        save_checkpoint(path, second, meta)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["finetune_best.pt"], "不应留下临时文件"
    loaded, _ = cu.load_checkpoint(path)
    assert torch.equal(_predict(loaded, _tensors(n=4)[0]), _predict(first, _tensors(n=4)[0]))


def test_missing_checkpoint_says_which_notebook_and_strategy_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    path = cu.checkpoint_path("demo", "finetune")
    assert path == tmp_path / "demo" / "checkpoints" / "finetune_best.pt"
    assert metrics_path("demo", "finetune") == tmp_path / "demo" / "metrics" / "finetune.json"
    with pytest.raises(CheckpointNotFound, match=r"04.*demo.*STRATEGY 设为 \"finetune\"") as caught:
        cu.load_checkpoint(path)
    assert isinstance(caught.value, FileNotFoundError)


def test_a_pickled_whole_model_from_the_tutorial_is_refused_with_an_explanation(tmp_path):
    model = _model()[0]
    path = tmp_path / "fruit30_pytorch_C1.pth"
    torch.save(model, path)  # 原教程的保存方式：整个模型对象
    with pytest.raises(CheckpointError, match=r"torch\.save\(model\).*pickle"):
        cu.load_checkpoint(path)
    bare = tmp_path / "bare.pt"
    torch.save(model.state_dict(), bare)
    with pytest.raises(CheckpointError, match="缺少 \"state_dict\" 和 \"meta\""):
        cu.load_checkpoint(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="读不出来"):
        cu.load_checkpoint(junk)


# ---------------------------------------------------------------- 中断与续训


class CrashingLoader:
    """包装一个 DataLoader：第 crash_epoch 次遍历到第 crash_batch 个批次时抛出异常（模拟断电、Ctrl+C）。"""

    def __init__(self, loader, crash_epoch, crash_batch):
        self.loader, self.crash_epoch, self.crash_batch = loader, crash_epoch, crash_batch
        self.dataset, self.generator, self.batch_size = loader.dataset, loader.generator, loader.batch_size
        self.passes = 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        self.passes += 1
        for index, batch in enumerate(self.loader):
            if self.passes == self.crash_epoch and index == self.crash_batch:
                raise RuntimeError("训练中途崩溃（模拟）")
            yield batch


def _image_loaders(seed):
    """Subset(带 transform 的数据集)：特征缓存要能把训练集换成验证集的预处理（与 03 的 make_datasets 相同）。"""
    images, labels = _tensors()
    base = RecordingDataset(images, labels, lambda x: x)
    generator = torch.Generator().manual_seed(seed)
    return (DataLoader(Subset(base, range(24)), batch_size=6, shuffle=True, generator=generator),
            DataLoader(Subset(RecordingDataset(images, labels, lambda x: x), range(24, 36)), batch_size=6))


@pytest.mark.parametrize("strategy, cache", [("finetune", False), ("freeze", True)])
def test_resume_after_a_crash_matches_an_uninterrupted_run_exactly(tmp_path, monkeypatch, strategy, cache):
    reference = _model(strategy)
    expected = _fit(reference, *_image_loaders(7), epochs=3, checkpoint_dir=tmp_path / "a", run_name=strategy,
                    feature_cache=cache)

    crashed = _model(strategy)
    train, val = _image_loaders(7)
    if cache:  # 缓存特征时，第 2 轮的验证过程中崩溃
        import course_utils.train as train_module

        real, calls = train_module.evaluate, []

        def crashing(*args):
            calls.append(1)
            if len(calls) == 5:  # 前 2 次是提取训练、验证特征，然后每轮验证一次
                raise RuntimeError("验证时崩溃（模拟）")
            return real(*args)

        monkeypatch.setattr(train_module, "evaluate", crashing)
    else:
        train = CrashingLoader(train, crash_epoch=2, crash_batch=2)
    with pytest.raises(RuntimeError, match="模拟"):
        _fit(crashed, train, val, epochs=3, checkpoint_dir=tmp_path / "b", run_name=strategy, feature_cache=cache)
    monkeypatch.undo()
    assert torch.load(tmp_path / "b" / f"{strategy}_last.pt", weights_only=True)["train_state"]["epoch"] == 2 - (not cache)

    resumed = _model(strategy, seed=99)  # 新进程里重新构建的模型：初始值不同也没关系
    torch.manual_seed(2024)
    history = _fit(resumed, *_image_loaders(12345), epochs=3, checkpoint_dir=tmp_path / "b", run_name=strategy,
                   resume=True, feature_cache=cache)
    assert [h["epoch"] for h in history] == [1, 2, 3]
    strip = lambda hs: [{k: v for k, v in h.items() if k not in ("seconds", "cache_seconds")} for h in hs]  # noqa: E731
    assert strip(history) == strip(expected)
    state, expected_state = resumed[0].state_dict(), reference[0].state_dict()
    assert all(torch.equal(state[k], expected_state[k]) for k in expected_state)


def test_resume_refuses_a_checkpoint_of_another_strategy_and_a_finished_run_trains_nothing_more(tmp_path):
    train, val = _loaders()
    first = _fit(_model("finetune"), train, val, epochs=2, checkpoint_dir=tmp_path, run_name="run")
    again = _fit(_model("finetune"), train, val, epochs=2, checkpoint_dir=tmp_path, run_name="run", resume=True)
    assert again == first
    with pytest.raises(CheckpointError, match="不能从.*续训"):
        _fit(_model("scratch"), train, val, epochs=3, checkpoint_dir=tmp_path, run_name="run", resume=True)


# ---------------------------------------------------------------- 冻结训练与特征缓存


class RecordingDataset(Dataset):
    """带 transform 的小数据集。"""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


class CountingTransform:
    def __init__(self):
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        return image


def test_feature_cache_uses_the_eval_transform_and_leaves_the_backbone_untouched():
    images, labels = _tensors()
    augment, plain = CountingTransform(), CountingTransform()
    train_ds = Subset(RecordingDataset(images, labels, augment), range(24))
    val_ds = Subset(RecordingDataset(images, labels, plain), range(24, 36))
    train = DataLoader(train_ds, batch_size=6, shuffle=True, generator=torch.Generator().manual_seed(0))
    parts = _model("freeze")
    before = {k: v.clone() for k, v in parts[0].state_dict().items()}
    history = _fit(parts, train, DataLoader(val_ds, batch_size=6), epochs=3, feature_cache=True)
    assert augment.calls == 0, "缓存特征时训练集不该经过随机增广"
    assert plain.calls == 24 + 12  # 每张图只算一次特征（训练 24 + 验证 12），而不是每轮一次
    assert train_ds.dataset.transform is augment  # 原来的数据集没有被改动
    after = parts[0].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc."))
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    cache = [h["cache_seconds"] for h in history]
    assert cache[0] > 0 and cache[1:] == [0, 0] and history[0]["seconds"] >= cache[0]


def test_backbone_features_are_the_heads_input_and_the_head_is_put_back():
    model, head, _, _ = _model("freeze")
    images, labels = _tensors(n=6)
    features, got = backbone_features(model, DataLoader(TensorDataset(images, labels), batch_size=4), "cpu")
    assert features.shape == (6, 512) and torch.equal(got, labels) and model.fc is head
    with torch.no_grad():
        assert torch.allclose(model.eval().fc(features), model(images), atol=1e-5)


def test_feature_cache_is_only_for_freeze():
    with pytest.raises(ValueError, match="只适用于 freeze"):
        _fit(_model("finetune"), *_image_loaders(0), feature_cache=True)


# ---------------------------------------------------------------- 指标与曲线


def test_record_run_writes_readable_chinese_metrics_naming_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    model, _, _, meta = _model("freeze", feature_cache=True)
    history = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.4, "val_loss": 0.9, "val_acc": 0.5, "lr": 0.001,
                "seconds": 2.0, "cache_seconds": 0.5},
               {"epoch": 2, "train_loss": 0.8, "train_acc": 0.6, "val_loss": 0.7, "val_acc": 0.5, "lr": 0.001,
                "seconds": 1.0, "cache_seconds": 0.0}]
    summary = cu.record_run(meta, history, model, device="cpu", test={"loss": 0.75, "acc": 0.625})["取值"]
    path = metrics_path("smoke", "freeze")
    metrics = read_metrics(path)
    assert json.loads(path.read_text(encoding="utf-8")) == metrics
    assert metrics["arch"] == "resnet18" and metrics["weights"] is None and "随机初始化" in metrics["weights_note"]
    assert metrics["best_epoch"] == 1 and metrics["seconds_total"] == 3.0 and metrics["cache_seconds"] == 0.5
    assert metrics["trainable_params"] == 512 * 3 + 3 and metrics["feature_cache"] is True
    assert metrics["settings"]["strategy"] == "freeze" and metrics["test_acc"] == 0.625
    assert summary["测试准确率"] == "62.5%" and summary["最佳验证准确率"] == "50.0%" and summary["缓存特征"].startswith("是")
    with pytest.raises(TypeError, match="只能用 str"):
        write_metrics(tmp_path / "bad.json", {"x": object()})


@pytest.mark.filterwarnings("error:Glyph:UserWarning")
def test_plot_history_draws_both_curves_and_marks_the_best_epoch():
    import matplotlib.pyplot as plt

    cu.setup_chinese_font()
    history = [{"epoch": e, "train_loss": 1 / e, "train_acc": 0.3 * e, "val_loss": 1.2 / e, "val_acc": v,
                "lr": 0.001, "seconds": 1.0} for e, v in [(1, 0.3), (2, 0.7), (3, 0.6)]]
    fig = cu.plot_history(history, title="测试")
    loss_ax, acc_ax = fig.axes
    assert loss_ax.get_ylabel().startswith("损失") and acc_ax.get_ylabel() == "准确率"
    val_line = [line for line in acc_ax.get_lines() if line.get_label() == "验证集"][0]
    assert list(val_line.get_ydata()) == [0.3, 0.7, 0.6]
    best_line = [line for line in acc_ax.get_lines() if "最佳" in line.get_label()][0]
    assert list(best_line.get_xdata()) == [2, 2] and "第 2 轮" in best_line.get_label()
    fig.savefig(os.devnull, format="png")
    plt.close(fig)


def test_demo_data_with_pretrained_lite0_freeze_is_far_above_chance_and_scratch_is_not(tmp_path):
    """离线的 demo 档位是真的迁移学习：几轮之后 freeze 远好于从头训练（快速版：48 像素、3 轮）。"""
    settings = cu.resolve_settings("demo", image_size=48, epochs=3, num_workers=0)
    results = {}
    for strategy in ("freeze", "scratch"):
        torch.manual_seed(0)
        model, head, info = cu.build_model(settings.arch, 12, strategy, settings.weights)
        data = cu.course_data(settings, mean=info["mean"], std=info["std"])
        optimizer = cu.make_optimizer(model, head, strategy, settings.lr)
        cu.fit(model, head, data.train_loader, data.val_loader, optimizer, epochs=3, device="cpu",
               feature_cache=strategy == "freeze")
        logits, labels = cu.evaluate(model, data.test_loader, "cpu")
        results[strategy] = (logits.argmax(1) == labels).float().mean().item()
    assert results["freeze"] > 0.8, results
    assert results["freeze"] - results["scratch"] > 0.15, results


class _CountingIterable:
    """记下被 iter() 了几次（每次 iter() 一个 DataLoader，就多一个迭代器，多启动加载进程、多读几批）。"""

    def __init__(self):
        self.iterations = 0

    def __len__(self):
        return 3

    def __iter__(self):
        self.iterations += 1
        return iter(range(3))


@pytest.mark.parametrize("headless", ["1", ""])
def test_progress_bars_iterate_a_loader_only_once(headless, monkeypatch):
    """tqdm.auto 会在创建进度条时先 iter() 一次（tqdm 的 issue #1598）；课程的进度条不能这样。"""
    from course_utils.progress import progress_bar

    monkeypatch.setenv("COURSE_HEADLESS", headless)
    data = _CountingIterable()
    assert list(progress_bar(data, desc="评估", leave=False)) == [0, 1, 2]
    assert data.iterations == 1
    images, labels = _tensors(n=6)
    loader = DataLoader(TensorDataset(images, labels), batch_size=3, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    plain = [batch[1].tolist() for batch in DataLoader(TensorDataset(images, labels), batch_size=3, shuffle=True,
                                                       generator=torch.Generator().manual_seed(0))]
    assert [batch[1].tolist() for batch in progress_bar(loader)] == plain  # 打乱的顺序和不加进度条时相同
