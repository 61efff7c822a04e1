"""三种策略对比（06 用）：用 papermill 执行训练笔记本 04、按验证集选定策略、之后才评测试集、对比表、学习曲线，
以及“训练图片越少，预训练越值钱”的数据量曲线。

公平比较的规矩：三种策略同样的数据划分、种子、轮数、图片尺寸、批量和预处理，**都不缓存特征**（数据增广相同）；
只按**验证集**准确率选策略，选定并记下之后，才在测试集上把每种策略各评一次。05、07 和选学的 10–12 默认用这里选中的策略。
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import time
from pathlib import Path

from . import paths
from .paths import RECORD_METADATA_KEY
from .checkpoints import (CheckpointNotFound, checkpoint_path, load_checkpoint, metrics_path, random_start,
                          read_metrics, write_metrics)
from .config import STRATEGIES, resolve_settings
from .models import build_model, make_optimizer, strategy_label
from .progress import progress_bar
from .runner import execute_notebook

__all__ = [
    "run_strategies", "strategy_checkpoint", "checkpoint_data", "comparison_caveats", "plot_strategy_curves",
    "data_efficiency", "plot_data_efficiency",
]

# 判断“已有结果可以复用”时必须相同的设置（test 不在其中：它只决定训练完要不要顺手评测试集）
SAME_RUN_KEYS = (
    "dataset", "arch", "per_class_limit", "val_fraction", "seed", "epochs", "max_batches", "weights", "image_size",
    "resize_size", "batch_size", "lr", "backbone_lr_scale", "strategy", "feature_cache",
)
# 06 注入给每次 04 的参数：都不缓存特征（数据增广相同），先不评测试集（选定策略之后统一评）
COMPARISON_PARAMETERS = {"FEATURE_CACHE": False, "TEST": False}
CHOICE_FILE = "choice.json"


class StrategyRunFailed(RuntimeError):
    """用 papermill 执行训练笔记本 04 时出错。"""


class Notes(list):
    """几条说明文字：是普通的列表，在笔记本里显示成一个项目列表。"""

    def _repr_markdown_(self) -> str:
        return "\n".join(f"- {note}" for note in self) if self else "（没有需要特别注意的地方。）"


# ---------------------------------------------------------------- 执行训练笔记本

def _run_training_notebook(profile: str, strategy: str, parameters: dict, notebook=None) -> Path:
    """用 papermill 执行一次训练笔记本，副本写到 ``outputs/<档位>/notebooks/04_train_<策略>.ipynb``。"""
    import nbformat
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook or paths.NOTEBOOKS_DIR / "04_train.ipynb")
    output = paths.output_dir(profile, "notebooks") / f"{notebook.stem}_{strategy}.ipynb"
    injected = {**parameters, "PROFILE": profile, "STRATEGY": strategy}
    try:
        execute_notebook(notebook, output, injected, progress_bar=False)
    except PapermillExecutionError as exc:
        raise StrategyRunFailed(
            f"训练笔记本 {notebook.name}（STRATEGY = {strategy!r}）出错：{exc.ename}: {exc.evalue}\n"
            f"执行到出错处的副本在 {paths.display_path(output)}，打开它查看出错的单元格。"
        ) from exc
    finally:
        if output.exists():  # 记下“这是一次训练记录”和注入的参数（讲义按它分组）
            nb = nbformat.read(output, as_version=4)
            nb.metadata[RECORD_METADATA_KEY] = {"strategy": strategy, "parameters": dict(injected)}
            nbformat.write(nb, output)
    return output


def _load_metrics(profile: str, strategy: str) -> dict | None:
    return read_metrics(path) if (path := metrics_path(profile, strategy)).exists() else None


def _reuse_blocker(profile: str, strategy: str, parameters: dict) -> str | None:
    """已有结果为什么不能复用（一句话）；能复用时返回 None。设置逐项相同（按 04 补全默认值之后比较）才复用。"""
    metrics = _load_metrics(profile, strategy)
    if metrics is None:
        return "还没有训练结果"
    lowered = {key.lower(): value for key, value in parameters.items() if key.upper() != "TEST"}
    expected = resolve_settings(profile, **lowered, strategy=strategy).to_dict()
    stored = metrics.get("settings", {})
    changed = sorted(key for key in set(SAME_RUN_KEYS) | set(lowered) if stored.get(key) != expected.get(key))
    return f"设置不同（{'、'.join(changed)}）" if changed else None


def run_strategies(profile: str, strategies=STRATEGIES, parameters: dict | None = None, force: bool = False,
                   notebook=None, device="cpu"):
    """在完全相同的条件下为每种策略各执行一次训练笔记本 04，按验证集选定策略，再统一评测试集，返回对比表。

    参数：
        parameters：传给 04 的其余参数（如 ``{"EPOCHS": 3}``），值为 None 的项用档位默认值。
        force：True 时一律重新训练；否则设置完全相同的已有结果直接复用。
        notebook：训练笔记本（默认 notebooks/04_train.ipynb；测试时换成小笔记本）。
    返回：
        对比表（每行一种策略），多两列：“来源”（复用 / 本次训练）和“选中”（验证准确率最高的那种）。
    """
    parameters = {**{k: v for k, v in (parameters or {}).items()
                     if v is not None and k.upper() not in ("PROFILE", "STRATEGY")}, **COMPARISON_PARAMETERS}
    sources = {}
    bar = progress_bar(list(strategies), desc="三种策略", unit="个")
    for strategy in bar:
        bar.set_postfix_str(strategy)
        blocker = "指定了重新训练（FORCE）" if force else _reuse_blocker(profile, strategy, parameters)
        if blocker is not None:
            _run_training_notebook(profile, strategy, parameters, notebook)
        sources[strategy] = "复用已有结果" if blocker is None else f"本次训练：{blocker}"
    chosen = _choose(profile, strategies)
    _test_after_choice(profile, strategies, device)
    table = strategy_comparison(profile, strategies)
    table.insert(0, "来源", [sources[s] for s in strategies])
    table.insert(1, "选中", ["✔（验证准确率最高）" if s == chosen else "" for s in strategies])
    return table


def _choose(profile: str, strategies) -> str:
    """只看验证集：最佳验证准确率最高的策略（并列时取课程里靠前的），写进 ``metrics/choice.json``。"""
    metrics = _all_metrics(profile, strategies)
    chosen = max(strategies, key=lambda s: (metrics[s]["best_val_acc"], -list(strategies).index(s)))
    record = {"strategy": chosen, "best_val_acc": metrics[chosen]["best_val_acc"], "strategies": list(strategies),
              "rule": "验证集准确率最高（测试集在选定之后才评）"}
    write_metrics(paths.output_dir(profile, "metrics") / CHOICE_FILE, record)
    return chosen


def _test_after_choice(profile: str, strategies, device) -> None:
    """策略选定之后，才在测试集上把每种策略的最佳检查点各评一次，成绩写回它的指标 JSON。已有测试成绩的
    （04 单独运行时、或上次对比时评过同一个最佳检查点）不再重评：数字会完全一样。"""
    for strategy in strategies:
        if read_metrics(path := metrics_path(profile, strategy)).get("test_acc") is None:
            test = checkpoint_test_accuracy(checkpoint_path(profile, strategy), device)
            write_metrics(path, {**read_metrics(path), "test_acc": test["acc"], "test_loss": test["loss"]})


def checkpoint_test_accuracy(path, device, profile: str | None = None) -> dict:
    """加载检查点，在它那个档位的测试集上评一次：``{"loss", "acc"}``。"""
    import torch.nn.functional as F

    from .train import channels_last, evaluate

    model, meta = load_checkpoint(path, device=device)
    data = checkpoint_data(resolve_settings(profile or meta["profile"]), meta)
    with channels_last(model, device):
        logits, labels = evaluate(model, data.test_loader, device)
    return {"loss": F.cross_entropy(logits, labels).item(), "acc": (logits.argmax(1) == labels).float().mean().item()}


def checkpoint_data(settings, meta: dict):
    """按检查点记下的尺寸和归一化参数准备数据（05、07、10–12 用），并确认类别与训练时一致。"""
    from .data import DatasetError, course_data

    data = course_data(settings.replace(image_size=meta["image_size"], resize_size=meta["resize_size"]),
                       mean=meta["mean"], std=meta["std"])
    if data.class_names != list(meta["class_names"]):
        raise DatasetError(
            f"数据集的类别与检查点不一致：检查点有 {len(meta['class_names'])} 类，数据集有 {len(data.class_names)} 类。"
            "检查 PROFILE 是否与训练时相同，或用当前档位重新运行 04_train.ipynb。")
    return data


# ---------------------------------------------------------------- 选中的策略（05、07、10–12 用）

def strategy_checkpoint(profile: str, strategy: str | None = None, run_missing: bool | None = None,
                        notebook=None) -> Path:
    """某个策略的最佳检查点；strategy 为 None 时用 06 按验证集选中的策略。打印一句用的是哪个、为什么。

    还没有结果时：demo / smoke 档位当场补上（strategy 为 None 时跑一遍 06 的对比，否则用 papermill 运行一次 04）；
    full / quick 档位训练较久，strategy 为 None 时在已经训练过的策略里按验证准确率挑，一个都没有就报错。
    """
    run_missing = profile in ("demo", "smoke") if run_missing is None else run_missing
    choice_file = paths.output_dir(profile, "metrics") / CHOICE_FILE
    if strategy is None:
        if run_missing and not choice_file.exists():
            print(f"还没有做过三种策略的对比：现在按 06 的做法训练三种策略（{profile} 档位）……")
            run_strategies(profile, notebook=notebook)
        if choice_file.exists():
            strategy = read_metrics(choice_file)["strategy"]
            print(f"使用 06 按验证集选中的策略：{strategy_label(strategy)}。")
        else:
            trained = {s: m for s in STRATEGIES if (m := _load_metrics(profile, s))}
            if not trained:
                raise CheckpointNotFound(_missing(profile, "freeze"))
            strategy = max(trained, key=lambda s: trained[s]["best_val_acc"])
            print(f"还没有运行 06：在已经训练过的 {'、'.join(trained)} 里按验证准确率选了 {strategy_label(strategy)}。")
    path = Path(checkpoint_path(profile, strategy))
    if not path.exists() and not run_missing:
        raise CheckpointNotFound(_missing(profile, strategy))
    if not path.exists():
        print(f"还没有 {strategy} 策略的检查点：现在用 papermill 运行 04_train.ipynb（{profile} 档位）来训练一个……")
        _run_training_notebook(profile, strategy, {}, notebook)
    return path


def _missing(profile: str, strategy: str) -> str:
    return (f"还没有 {profile} 档位、{strategy} 策略的检查点。先运行 04_train.ipynb（PROFILE = {profile!r}、"
            f"STRATEGY = {strategy!r}）或 06_compare.ipynb，例如\n"
            f"  python -m course_utils run --profile {profile} --only 04 -p STRATEGY={strategy}")


# ---------------------------------------------------------------- 对比表与说明

def _all_metrics(profile: str, strategies) -> dict:
    found = {s: _load_metrics(profile, s) for s in strategies}
    missing = [s for s, m in found.items() if m is None]
    if missing:
        raise FileNotFoundError(f"{profile} 档位还没有这些策略的训练结果：{'、'.join(missing)}。"
                                "先运行 06_compare.ipynb 的训练单元格（cu.run_strategies），或分别运行 04_train.ipynb。")
    return found


def strategy_comparison(profile: str, strategies=STRATEGIES):
    """读取各策略的指标 JSON，整理成一张对比表（每行一种策略）：效果、代价、学习率和起点。"""
    import pandas as pd

    rows = []
    for strategy, m in _all_metrics(profile, strategies).items():
        settings = m.get("settings", {})
        lr, scale = settings.get("lr"), settings.get("backbone_lr_scale", 1.0)
        backbone = "不训练" if strategy == "freeze" else f"{lr * (scale if strategy == 'finetune' else 1.0):g}"
        rows.append({
            "策略": strategy_label(strategy), "最佳验证准确率": m.get("best_val_acc"), "测试集准确率": m.get("test_acc"),
            "最佳轮次": m.get("best_epoch"), "轮数": m.get("epochs"), "可训练参数": m.get("trainable_params"),
            "分类头学习率": f"{lr:g}", "主干学习率": backbone,
            "每轮用时（秒）": m.get("seconds_per_epoch"), "总用时（秒）": m.get("seconds_total"),
            "初始权重": m.get("weights") or "随机初始化", "特征缓存": "是" if m.get("feature_cache") else "否",
        })
    return pd.DataFrame(rows).set_index("策略")


def comparison_caveats(profile: str, strategies=STRATEGIES) -> Notes:
    """读对比表之前要知道的事：数据是不是 fruit30、有没有真的用上预训练权重、训练条件哪里不同。"""
    metrics = _all_metrics(profile, strategies)
    notes = Notes()
    if profile in ("demo", "smoke"):
        notes.append(f"这次用的是课程生成的 {profile} 数据集，不是 fruit30：图片比真实照片简单，准确率会偏高。")
    randomly, effects = random_start(metrics)
    if randomly:
        by_design = all(metrics[s].get("settings", {}).get("weights") is None for s in randomly)
        why = "按设置没有用" if by_design else "这次没有用上"
        remedy = ("想看迁移学习的作用，换用 demo、quick 或 full 档位。" if by_design else
                  "拿到权重后（联网，或在 parameters 单元格里写 WEIGHTS = \"权重文件路径\"）设 FORCE = True 重新运行。")
        notes.append(f"{'、'.join(randomly)} {why}预训练权重（随机初始化）：{effects}。"
                     f"所以它们和 scratch 的差别不能说明迁移学习的作用。{remedy}")
    notes += [f"{s} 缓存了主干特征：训练时没有数据增广，和其他策略的条件不同（06 注入的参数本来不缓存）。"
              for s, m in metrics.items() if m.get("feature_cache")]
    return Notes(notes + sorted({m.get("weights_note") for m in metrics.values() if m.get("weights")}))


def plot_strategy_curves(profile: str, strategies=STRATEGIES):
    """三种策略的学习曲线：左图为每轮的验证集准确率，右图为训练损失（虚线）与验证损失（实线）。"""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4))
    all_epochs = set()
    for strategy, m in _all_metrics(profile, strategies).items():
        history = m.get("history") or []
        epochs = [h["epoch"] for h in history]
        all_epochs.update(epochs)
        label = strategy_label(strategy)
        line, = acc_ax.plot(epochs, [h["val_acc"] for h in history], marker="o", label=label)
        loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", color=line.get_color(), label=label)
        loss_ax.plot(epochs, [h["train_loss"] for h in history], linestyle="--", color=line.get_color())
    acc_ax.set(title="验证集准确率", xlabel="轮（epoch）", ylabel="准确率", ylim=(0, 1.02))
    acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    loss_ax.set(title="损失（实线：验证集，虚线：训练集）", xlabel="轮（epoch）", ylabel="交叉熵损失")
    for ax in (acc_ax, loss_ax):
        ax.legend()
        if len(all_epochs) <= 25:
            ax.set_xticks(sorted(all_epochs))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- 数据量曲线：每类只有几张训练图时

MIN_STEPS = 12  # 训练集很小时也至少走这么多步（否则每类 2 张图、3 轮只有 3 步，什么都学不到）


def data_efficiency(settings, device, sizes=None, strategies=STRATEGIES):
    """每类只留 sizes 张训练图（None：smoke 取 (2,)，其余档位 (2, 5, 10)；验证集、测试集不变）加上“全部”，每种策略
    每点训练一次。做法相同：档位的轮数，但总步数不少于 ``MIN_STEPS``；报告最后一轮的测试准确率（不看验证集）。
    结果存在 ``metrics/data_efficiency.json``，设置相同就复用。返回长表：策略、每类训练图、训练图片数、类别数、
    测试准确率、测试损失、用时（秒；freeze 各点不含共用的那次特征计算）。
    """
    import pandas as pd

    sizes = tuple(sizes or ((2,) if settings.profile == "smoke" else (2, 5, 10)))
    cache = paths.output_dir(settings.profile, "metrics") / "data_efficiency.json"
    key = {"settings": settings.to_dict(), "sizes": list(sizes), "strategies": list(strategies), "min_steps": MIN_STEPS}
    if cache.exists() and (stored := read_metrics(cache)).get("key") == key:
        print(f"设置与上次相同：复用 {paths.display_path(cache)}。")
        return pd.DataFrame(stored["rows"])
    bar = progress_bar(list(strategies), desc="数据量曲线", unit="种策略")
    rows = []
    for strategy in bar:
        bar.set_postfix_str(strategy)
        with _quiet():
            rows += _strategy_points(settings, strategy, [*sizes, None], device)
    write_metrics(cache, {"key": key, "rows": rows})
    return pd.DataFrame(rows)


def _strategy_points(settings, strategy: str, points, device) -> list[dict]:
    """一种策略在数据量曲线上的各点（每点一行），只换训练子集（与 ``course_data(train_per_class=...)`` 挑的相同）。
    freeze：主干把训练图（评估预处理）、验证图、测试图各算一遍特征，每点只训练一个新的分类头；
    finetune / scratch：每点从头训练一次，“全部”直接评 06 的最后一轮检查点。"""
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, Subset, TensorDataset

    from .data import course_data, dataset_classes, limit_per_class, make_loaders
    from .train import _cached_loaders, backbone_features, channels_last, evaluate, fit

    fresh = functools.partial(build_model, settings.arch, len(dataset_classes(settings.dataset)), strategy,
                              settings.weights, required=settings.weights_required)
    model, head, info = fresh()
    data = course_data(settings, mean=info["mean"], std=info["std"])
    images, labels = next(iter(data.val_loader))
    val = [(images[:1], labels[:1])]  # 这里不看验证集：每轮只验证一张图
    train_set, test, workers = data.train_ds, data.test_loader, data.train_loader.num_workers
    if strategy == "freeze":  # 特征已在内存里，训练分类头不用加载进程
        with channels_last(model.to(device), device):
            train_set, val_set = (loader.dataset for loader in
                                  _cached_loaders(model, data.train_loader, data.val_loader, device))
            test = DataLoader(TensorDataset(*backbone_features(model, test, device)), batch_size=settings.batch_size)
        val, workers = DataLoader(val_set, batch_size=settings.batch_size), 0
    position = {index: i for i, index in enumerate(data.train_ds.indices)}  # 底层数据集的下标 -> 训练集里的位置
    last = Path(checkpoint_path(settings.profile, strategy, kind="last"))
    rows = []
    for per_class in points:
        began = time.perf_counter()
        keep = (list(range(len(position))) if per_class is None else
                [position[i] for i in limit_per_class(data.train_ds, per_class, settings.seed)])
        if strategy != "freeze" and per_class is None and last.exists():
            model, meta = load_checkpoint(last, device=device)
            point_test = checkpoint_data(settings, meta).test_loader
        else:
            if strategy == "freeze":
                model = head = nn.Linear(head.in_features, head.out_features)
            elif rows:
                model, head, _ = fresh()
            loader = make_loaders(Subset(train_set, keep), data.val_ds, data.test_ds, settings.batch_size, workers,
                                  settings.seed)[0]
            epochs = settings.epochs if settings.max_batches else max(  # 总步数不少于 MIN_STEPS（smoke 只为跑通）
                settings.epochs, math.ceil(MIN_STEPS / math.ceil(len(keep) / settings.batch_size)))
            optimizer = make_optimizer(model, head, strategy, settings.lr, settings.backbone_lr_scale)
            fit(model, head, loader, val, optimizer, epochs=epochs, device=device, max_batches=settings.max_batches)
            point_test = test
        with channels_last(model, device):
            logits, labels = evaluate(model, point_test, device)
        rows.append({"策略": strategy, "每类训练图": per_class or "全部", "训练图片数": len(keep),
                     "类别数": len(data.class_names), "测试准确率": (logits.argmax(1) == labels).float().mean().item(),
                     "测试损失": F.cross_entropy(logits, labels).item(),
                     "用时（秒）": round(time.perf_counter() - began, 1)})
    return rows


@contextlib.contextmanager
def _quiet():
    """训练十几次时不打印每一次的“已加载权重”和每次训练的进度条（外面有一个总进度条）。"""
    from . import train

    shown = train.tqdm
    train.tqdm = functools.partial(progress_bar, disable=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        train.tqdm = shown


def plot_data_efficiency(table):
    """横轴是每类训练图片数（对数刻度），纵轴是测试准确率，每种策略一条线：图片越少，预训练越值钱。"""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    table = table.assign(每类平均=table["训练图片数"] / table["类别数"])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for strategy, group in table.groupby("策略", sort=False):
        ax.plot(group["每类平均"], group["测试准确率"], marker="o", label=strategy_label(strategy))
    ax.axhline(1 / table["类别数"].max(), color="gray", linestyle=":", label="随机猜测（1 / 类别数）")
    ticks = sorted(set(table["每类平均"].round().astype(int)))
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set(xlabel="每类训练图片数（对数刻度；最右边是全部训练图）", ylabel="测试集准确率", ylim=(0, 1.02),
           title="训练图片越少，预训练越值钱")
    ax.legend()
    fig.tight_layout()
    return fig
