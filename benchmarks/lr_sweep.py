"""第 6 节：课程的学习率是怎么选的——在 demo 档位的验证集上扫一遍。

config.py 里各档位的学习率都是 1e-3（分类头；finetune 的主干再乘 backbone_lr_scale）。这里在 demo 档位
（演示数据、EfficientNet-Lite0 的 ImageNet 权重、112 像素）上比较几个学习率：

- freeze：训练分类头若干轮。主干不变，特征只算一次、各学习率共用（训练集用评估预处理，与 ``cu.fit`` 的
  ``feature_cache=True`` 算的相同）；每个学习率从同样的初始分类头、同样的批次顺序出发，训练就是 ``cu.fit``；
- finetune（参照，不设目标）：训练全部层 2 轮，数据增广与课程相同。

只按验证集选：最后一轮的验证准确率最高者，并列时取较小的学习率。测试集一张也不用——
用测试集挑超参数，测试准确率就不再是模型没见过的数据上的成绩。
"""

from __future__ import annotations

import course_utils as cu

from .common import Section, Target, quiet

FREEZE_LRS = (1e-3, 3e-3, 1e-2, 3e-2)
FINETUNE_LRS = (3e-4, 1e-3, 3e-3)


def lr_text(lr: float) -> str:
    """1e-3、3e-4 这样的写法。"""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def cached_features(model, data, device):
    """主干对训练集（评估预处理）和验证集的特征，各算一次：((特征, labels), (特征, labels))。"""
    from torch.utils.data import DataLoader, Subset

    plain = Subset(data.val_ds.dataset, data.train_ds.indices)  # val_ds 底下是换成评估预处理的 train/
    train = cu.train.backbone_features(model, DataLoader(plain, batch_size=data.train_loader.batch_size), device)
    return train, cu.train.backbone_features(model, data.val_loader, device)


def sweep_freeze(train, val, num_classes: int, lrs, epochs: int, device, batch_size: int = 32, seed: int = 42):
    """在缓存的特征上，每个学习率各训练一个新的分类头 epochs 轮；返回 {学习率: cu.fit 的历史}。"""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    histories = {}
    for lr in lrs:
        torch.manual_seed(seed)  # 同样的初始分类头、同样的批次顺序
        head = nn.Linear(train[0].shape[1], num_classes)
        shuffled = DataLoader(TensorDataset(*train), batch_size, shuffle=True,
                              generator=torch.Generator().manual_seed(seed))
        optimizer = cu.make_optimizer(head, head, "freeze", lr)
        with quiet():  # 与 feature_cache=True 时 fit 内部做的相同：只训练分类头
            histories[lr] = cu.fit(head, head, shuffled, DataLoader(TensorDataset(*val), batch_size), optimizer,
                                   epochs=epochs, device=device)
    return histories


def sweep_finetune(settings, data, lrs, epochs: int, device, max_batches: int | None = None):
    """每个学习率从同一份预训练权重出发，微调全部层 epochs 轮；返回 {学习率: cu.fit 的历史}。"""
    import torch

    histories = {}
    for lr in lrs:
        torch.manual_seed(settings.seed)
        with quiet():
            model, head, _ = cu.build_model(settings.arch, len(data.class_names), "finetune", settings.weights,
                                            required=True)
            optimizer = cu.make_optimizer(model, head, "finetune", lr, settings.backbone_lr_scale)
            train_loader, val_loader, _ = cu.make_loaders(data.train_ds, data.val_ds, data.test_ds, settings.batch_size,
                                                          data.train_loader.num_workers, settings.seed)
            histories[lr] = cu.fit(model, head, train_loader, val_loader, optimizer, epochs=epochs, device=device,
                                   max_batches=max_batches)
    return histories


def choose(histories: dict) -> float:
    """按最后一轮的验证准确率选学习率，并列时取较小的（更稳）。只看验证集。"""
    return min(histories, key=lambda lr: (-histories[lr][-1]["val_acc"], lr))


def rows_and_target(strategy: str, histories: dict, default: float, n_val: int) -> tuple[list[dict], Target]:
    """每个学习率一行（每轮的验证准确率）；目标：课程默认的学习率比选中的差几张验证图。"""
    chosen = choose(histories)
    rows = [{"策略": strategy, "学习率": lr_text(lr),
             **{f"第 {r['epoch']} 轮": f"{r['val_acc']:.1%}" for r in history},
             "最后一轮验证对几张": f"{round(history[-1]['val_acc'] * n_val)} / {n_val}",
             "最后一轮验证损失": history[-1]["val_loss"], "选中": "是" if lr == chosen else ""}
            for lr, history in histories.items()]
    gap = round((histories[chosen][-1]["val_acc"] - histories[default][-1]["val_acc"]) * n_val)
    target = Target(f"{strategy}：默认学习率 {lr_text(default)} 比选中的 {lr_text(chosen)} 少对几张验证图", gap, 1.0,
                    False, f"最后一轮验证准确率之差 × 验证集 {n_val} 张")
    return rows, target


def run(device, quick: bool = False, context: dict | None = None):
    """第 6 节：freeze（缓存特征）的学习率扫描，按验证集选；finetune 的短扫描作参照。"""
    settings = cu.resolve_settings("demo", per_class_limit=12 if quick else None)
    freeze_epochs, finetune_epochs = (2, 1) if quick else (8, 2)
    num_classes = len(cu.dataset_classes(settings.dataset))
    with quiet():
        # required=True：拿不到 Lite0 的 ImageNet 权重就停下，不拿随机初始化的结果冒充（demo 档位本身会退回随机初始化）
        model, _, info = cu.build_model(settings.arch, num_classes, "freeze", settings.weights, required=True)
        data = cu.course_data(settings, mean=info["mean"], std=info["std"])
    n_val = len(data.val_ds)
    train, val = cached_features(model, data, device)
    sweeps = {"freeze": sweep_freeze(train, val, num_classes, FREEZE_LRS, freeze_epochs, device,
                                     settings.batch_size, settings.seed),
              "finetune": sweep_finetune(settings, data, FINETUNE_LRS, finetune_epochs, device,
                                         max_batches=2 if quick else None)}
    rows, targets = [], []
    for strategy, histories in sweeps.items():
        strategy_rows, target = rows_and_target(strategy, histories, settings.lr, n_val)
        rows += strategy_rows
        if strategy == "freeze":  # 课程的学习率按 freeze 选；finetune 只训练 2 轮，只作参照，不设目标
            targets.append(target)
    chosen = "，".join(f"{s} 选 {lr_text(choose(h))}" for s, h in sweeps.items())
    notes = [
        f"demo 档位：{settings.arch}，{settings.image_size} 像素，批量 {settings.batch_size}；训练 {len(data.train_ds)} 张、"
        f"验证 {n_val} 张（从 train/ 分层划出，一张图 = {1 / n_val:.1%}）；测试集没有用。权重：{info['weights_note']}",
        f"freeze 训练 {freeze_epochs} 轮（缓存的特征，没有数据增广）；finetune 训练 {finetune_epochs} 轮"
        f"（数据增广与课程相同，主干学习率 = 学习率 × {settings.backbone_lr_scale:g}）。",
        f"按最后一轮的验证准确率选（并列取较小的学习率）：{chosen}。课程默认 {lr_text(settings.lr)}（config.py，两种策略共用）"
        f"在 freeze 上比选中的少对 {targets[0].value:.0f} 张验证图；验证集只有 {n_val} 张，一两张的差别在抽样波动以内，"
        "所以目标是“不超过 1 张”：几个学习率差不多好时，取较小的那个。",
        f"finetune 几行只作参照、不设目标：只训练 {finetune_epochs} 轮（demo 档位训练 {settings.epochs} 轮），"
        "轮数不同，选出的学习率不一定相同。",
    ]
    if quick:
        notes.append("--quick：每类 12 张训练图、finetune 每轮只训练 2 个批次，这些数字不作结论。")
    return Section("lr_sweep", "6. 学习率：在 demo 验证集上扫一遍", rows, notes), targets
