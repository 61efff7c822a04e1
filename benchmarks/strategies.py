"""第 1 节：原教程式的 strategy 1 对比本课程的 freeze、freeze + 特征缓存（演示数据，ResNet-18，224 像素）。

原教程的 strategy 1 只让优化器跳过主干：主干参数的 requires_grad 仍是 True，所以每一步反向传播
都算遍整个网络；BatchNorm 处于训练模式，用每个批次的统计量并改写 running_mean / running_var。
基线用的就是课程的 ``cu.train_one_epoch``，只是优化器只含分类头、主干不冻结（见 ``TutorialMode``）；
本课程的两种做法直接调用 ``cu.fit``，和笔记本 04 用的是同一段代码。

几种做法按“轮”交替执行（基线一轮、freeze 一轮、……），机器负载的起伏对各做法的影响相同。
"""

from __future__ import annotations

import copy
import itertools
import math
import tempfile

import course_utils as cu

from .common import Section, Target, course_channels_last, median, quiet, timed

FULL_EPOCHS = 20  # 原教程训练 20 轮


def demo_workload(quick: bool, seed: int = 42):
    """演示数据集、ResNet-18 的归一化、224 像素、批量 32、课程默认的加载进程数；quick 时每类只取 12 张训练图。"""
    settings = cu.resolve_settings("demo", arch="resnet18", image_size=224, weights="None",
                                   per_class_limit=12 if quick else None, seed=seed)  # 224 像素时评估先缩放到 256
    record = cu.models.weights_record("resnet18")
    with quiet():  # 第一次要生成演示数据（约半分钟），之后直接复用
        data = cu.course_data(settings, mean=record["mean"], std=record["std"])
    return settings, data


def fresh_loaders(data, settings):
    """与 data 里同样的 (train, val, test) 三个 DataLoader：同一个种子，每种做法看到同样的批次顺序。"""
    workers = data.train_loader.num_workers
    return cu.make_loaders(data.train_ds, data.val_ds, data.test_ds, settings.batch_size, workers, settings.seed)


def accuracy(model, loader, device) -> float:
    logits, labels = cu.evaluate(model, loader, device)
    return (logits.argmax(dim=1) == labels).float().mean().item()


def calibrated_backbone(num_classes: int, loader, device, batches: int, seed: int):
    """随机初始化的 ResNet-18，BatchNorm 的统计量先用本数据校准（模拟预训练网络，见本节说明）。

    预训练网络的 running_mean / running_var 与自然图片的分布相符；随机网络的是 0 和 1，
    按推理模式冻结时特征的尺度会一层层失控。校准后，冻结的主干与原教程训练模式下的主干
    看到的是同样尺度的特征，两者的准确率才有可比性。返回 state_dict。
    """
    import torch

    torch.manual_seed(seed)
    model, _, _ = cu.build_model("resnet18", num_classes, "finetune", weights=None)
    model.to(device)
    for layer in model.modules():
        if isinstance(layer, torch.nn.BatchNorm2d):
            layer.momentum = None  # 累积平均：校准结果不依赖批次顺序的最后几批
    model.train()
    with torch.no_grad():
        for images, _ in itertools.islice(loader, batches):
            model(images.to(device))
    return copy.deepcopy(model.state_dict())


def batchnorm_changed(model, state: dict) -> bool:
    """第一个 BatchNorm 的 running_mean 与起点相比是否变了（原教程的第二个缺陷）。"""
    import torch

    name, layer = next((n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d))
    return not torch.equal(layer.running_mean.cpu(), state[f"{name}.running_mean"].cpu())


class TutorialMode:
    """原教程式的 strategy 1（基线）：主干 requires_grad=True、优化器只含分类头。

    训练循环就是 ``cu.train_one_epoch``：主干没有冻结，``set_train_mode`` 把所有 BatchNorm 都留在训练模式，
    和原教程的 ``model.train()`` 一样；反向传播算遍整个网络，只有分类头的梯度被优化器用上。
    """

    def __init__(self, label: str, state: dict, num_classes: int, lr: float, device, channels_last: bool):
        import torch

        self.label, self.device, self.channels_last = label, device, channels_last
        self.model, head, _ = cu.build_model("resnet18", num_classes, "finetune", weights=None)
        self.model.load_state_dict(state)
        self.model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        self.optimizer = torch.optim.Adam(head.parameters(), lr=lr)  # 原教程：优化器只含分类头
        self.val_acc: list[float] = []

    def epoch(self, train_loader, val_loader, max_batches: int | None = None) -> None:
        import torch

        cu.train_one_epoch(self.model, train_loader, torch.nn.CrossEntropyLoss(), self.optimizer, self.device,
                           max_batches)
        self.val_acc.append(accuracy(self.model, val_loader, self.device))  # 每轮验证，和 cu.fit 做同样多的事


class CourseFreezeMode:
    """本课程的 freeze：``cu.build_model(strategy="freeze")`` 加 ``cu.fit``，与笔记本 04 相同（不缓存特征）。"""

    def __init__(self, label: str, state: dict, num_classes: int, lr: float, device):
        self.label, self.device = label, device
        self.channels_last = course_channels_last(device)  # cu.fit 训练时的布局（结束后把模型换回原布局）
        self.model, self.head, _ = cu.build_model("resnet18", num_classes, "freeze", weights=None)
        self.model.load_state_dict(state)
        self.optimizer = cu.make_optimizer(self.model, self.head, "freeze", lr)
        self.val_acc: list[float] = []

    def epoch(self, train_loader, val_loader, max_batches: int | None = None) -> None:
        with quiet():  # 一次 fit 一轮：几种做法才能逐轮交替；优化器接着用，和一次训练多轮相同
            history = cu.fit(self.model, self.head, train_loader, val_loader, self.optimizer, epochs=1,
                             device=self.device, max_batches=max_batches)
        self.val_acc.append(history[-1]["val_acc"])


def run_cached(state: dict, settings, data, loaders, device, epochs: int):
    """freeze + 特征缓存，像笔记本 04 一样带检查点训练 epochs 轮；返回 (模型, 历史, 总用时)。"""
    model, head, info = cu.build_model("resnet18", len(data.class_names), "freeze", weights=None)
    model.load_state_dict(state)
    optimizer = cu.make_optimizer(model, head, "freeze", settings.lr)
    meta = cu.run_meta(settings, info, data.class_names)
    with tempfile.TemporaryDirectory() as folder, quiet():
        history, seconds = timed(lambda: cu.fit(
            model, head, loaders[0], loaders[1], optimizer, epochs=epochs, device=device, feature_cache=True,
            checkpoint_dir=folder, run_name="freeze", meta=meta), device)
    return model, history, seconds


def forward_pass_seconds(model, data, loaders, device) -> float:
    """参照：一次前向遍历——训练集（评估预处理）与验证集的每张图送进完整模型一次（cu.evaluate），含读图和预处理。

    这正是特征缓存要看的图片；内存布局与 cu.fit 相同。
    """
    import torch
    from torch.utils.data import DataLoader, Subset

    plain = Subset(data.val_ds.dataset, data.train_ds.indices)  # val_ds 底下是换成评估预处理的 train/
    train = DataLoader(plain, batch_size=loaders[0].batch_size, num_workers=loaders[0].num_workers)
    model.to(device, memory_format=torch.channels_last if course_channels_last(device) else torch.contiguous_format)
    return timed(lambda: [cu.evaluate(model, loader, device) for loader in (train, loaders[1])], device)[1]


def standard_error(acc: float, n: int) -> float:
    """准确率的标准误 sqrt(p(1-p)/n)：测试集只有 n 张图，准确率本身就有这么大的抽样波动。"""
    return math.sqrt(max(acc * (1 - acc), 1.0 / n) / n)


def build_modes(state: dict, num_classes: int, lr: float, device) -> list:
    return [
        TutorialMode("原教程式 strategy 1（基线：优化器只含分类头）", state, num_classes, lr, device, channels_last=False),
        TutorialMode("原教程式 + channels_last（只为拆开两个因素）", state, num_classes, lr, device, channels_last=True),
        CourseFreezeMode("本课程 freeze（cu.fit）", state, num_classes, lr, device),
    ]


def interleaved_epochs(modes: list, loaders: list, epochs: int) -> list[list[float]]:
    """先各用 2 个批次热身（在模型副本上），再逐轮交替：每种做法每轮的用时（秒）。"""
    for mode, (train, val, _) in zip(modes, loaders):
        copy.deepcopy(mode).epoch(train, val, max_batches=2)  # 一次性开销（卷积算法选择、进程启动）不计入
    seconds = [[] for _ in modes]
    for _ in range(epochs):
        for mode, (train, val, _), record in zip(modes, loaders, seconds):
            record.append(timed(lambda: mode.epoch(train, val), mode.device)[1])
    return seconds


def run(device, quick: bool = False, context: dict | None = None) -> tuple[Section, list[Target]]:
    """第 1 节的全部测量；返回结果表和两个目标（freeze 的加速倍数、特征缓存的 20 轮代价）。"""
    settings, data = demo_workload(quick)
    num_classes, epochs = len(data.class_names), 1 if quick else 3
    state = calibrated_backbone(num_classes, data.train_loader, device, batches=3 if quick else 8, seed=settings.seed)
    modes = build_modes(state, num_classes, settings.lr, device)
    loaders = [fresh_loaders(data, settings) for _ in modes]
    seconds = interleaved_epochs(modes, loaders, epochs)
    cache_loaders = fresh_loaders(data, settings)
    forward = [forward_pass_seconds(modes[-1].model, data, cache_loaders, device)]
    cached_model, history, cached_seconds = run_cached(state, settings, data, cache_loaders, device, FULL_EPOCHS)
    forward.append(forward_pass_seconds(modes[-1].model, data, cache_loaders, device))
    test_batches = 2 if quick else None  # --quick 只测 2 个批次的测试集
    models = [m.model for m in modes] + [cached_model]
    test = [accuracy(model, itertools.islice(test_loader, test_batches), device)
            for model, (_, _, test_loader) in zip(models, loaders + [cache_loaders])]
    record_epochs(context, modes, seconds, data)
    n_test = min(len(data.test_ds), (test_batches or 10**9) * settings.batch_size)
    details = dict(settings=settings, data=data, workers=data.train_loader.num_workers, epochs=epochs, state=state,
                   forward=min(forward), n_test=n_test)
    return summarize(modes, seconds, cached_model, history, cached_seconds, test, details)


def record_epochs(context: dict | None, modes, seconds, data) -> None:
    """把每种做法一轮的用时和图片数留给第 5 节，算整轮达到峰值的比例。"""
    if context is None:
        return
    sizes = {"train": len(data.train_ds), "val": len(data.val_ds)}
    context["epochs"] = {mode.label.split("（")[0]: {"kind": "freeze" if isinstance(mode, CourseFreezeMode)
                                                    else "finetune", "seconds": median(s), **sizes}
                         for mode, s in zip(modes, seconds)}


def summarize(modes, seconds, cached_model, history, cached_seconds, test, ctx) -> tuple[Section, list[Target]]:
    """整理成表格、说明和目标。"""
    epochs, n_test, state = ctx["epochs"], ctx["n_test"], ctx["state"]
    per_epoch = [median(s) for s in seconds]
    base = per_epoch[0]
    rows = []
    for mode, epoch_s, acc in zip(modes, per_epoch, test):
        rows.append(_row(mode.label, mode.model, state, epoch_s, base, epoch_s * FULL_EPOCHS,
                         f"外推：{FULL_EPOCHS} × 每轮中位数（实测 {epochs} 轮）", mode.val_acc[-1], acc, n_test,
                         mode.channels_last))
    head_epochs = (cached_seconds - history[0]["seconds"]) / (len(history) - 1)  # 第 2 轮起：含验证和写检查点
    rows.append(_row("本课程 freeze + 特征缓存（cu.fit，feature_cache=True，带检查点）", cached_model, state,
                     head_epochs, base, cached_seconds, f"实测 {FULL_EPOCHS} 轮（含算特征和每轮写检查点）",
                     history[epochs - 1]["val_acc"], test[-1], n_test, modes[-1].channels_last))
    rows.append({"做法": "参照：一次前向遍历（推理模式，train + val 各一遍，含读图）",
                 "每轮用时（秒）": ctx["forward"], "相对基线": base / ctx["forward"]})
    speedup = base / per_epoch[2]
    gap = abs(test[0] - test[2]) / math.hypot(standard_error(test[0], n_test), standard_error(test[2], n_test))
    targets = [
        Target("freeze 每轮比原教程式快（倍）", speedup, 2.5, True, "原教程式每轮用时 ÷ 本课程 freeze 每轮用时（224 像素，CPU）"),
        Target("freeze 与原教程式测试准确率之差（标准误）", gap, 2.0, False,
               f"|Δ准确率| ÷ 合并标准误；测试集 {n_test} 张，两者都训练 {epochs} 轮"),
        Target("特征缓存：20 轮用时 ÷ 一次前向遍历", cached_seconds / ctx["forward"], 1.5, False,
               "freeze + 特征缓存训练 20 轮的总用时 ÷ 一次前向遍历（两次测量取较快的一次）"),
    ]
    return Section("strategies", "1. 原教程式 strategy 1 与本课程的 freeze", rows, _notes(ctx, speedup, per_epoch)), targets


def _row(label, model, state, epoch_s, base, total_s, how, val_acc, test_acc, n_test, channels_last) -> dict:
    counts = cu.count_params(model)
    return {
        "做法": label, "每轮用时（秒）": epoch_s, "相对基线": base / epoch_s, "20 轮用时（秒）": total_s,
        "20 轮怎么得到": how, "求梯度的参数": f"{counts['trainable']:,}",  # requires_grad=True 的参数个数
        "BN 统计量被改写": "是" if batchnorm_changed(model, state) else "否",
        "内存布局": "channels_last" if channels_last else "contiguous",
        "验证准确率": f"{val_acc:.1%}", "测试准确率": f"{test_acc:.1%} ± {standard_error(test_acc, n_test):.1%}",
    }


def _notes(ctx, speedup: float, per_epoch: list[float]) -> list[str]:
    s, data = ctx["settings"], ctx["data"]
    layout_gain = per_epoch[0] / per_epoch[1]
    return [
        f"数据：课程的演示数据集（{len(data.class_names)} 类），训练 {len(data.train_ds)} 张、验证 {len(data.val_ds)} 张、"
        f"测试 {len(data.test_ds)} 张；{s.image_size} 像素，批量 {s.batch_size}，加载进程 {ctx['workers']} 个（课程默认），"
        "每种做法用同一个种子的 DataLoader，批次顺序相同。",
        "权重：随机初始化（这里无法下载 ImageNet 权重），BatchNorm 统计量先用本数据校准、各做法从同一个起点出发；"
        "用时与权重取值无关，准确率只用来比较各做法之间的差别，不代表迁移学习的效果。",
        f"“每轮”= 训练一轮 + 在验证集上评估一次（cu.fit 每轮都这样做，基线也照做）；表中是 {ctx['epochs']} 轮的中位数，"
        "正式计时前各做法先在模型副本上热身 2 个批次。特征缓存一行的每轮用时是第 2 轮起的平均"
        "（含验证和写检查点），第 1 轮还要先算一遍特征。",
        f"本课程 freeze 比原教程式快 {speedup:.1f} 倍，其中约 {layout_gain:.2f} 倍来自 channels_last 内存布局"
        f"（第 2 行：原教程式换成 channels_last），其余来自真正的冻结（反向传播不进主干）。",
        "原教程式的 BatchNorm 处于训练模式，用的是每个批次的统计量，特征和冻结的主干并不完全相同，"
        "所以两者的准确率可以有差别；特征缓存的训练集用评估预处理（没有随机增广），准确率也可能不同。",
    ]
