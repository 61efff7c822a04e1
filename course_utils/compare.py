"""三种策略对比（06 用）：用 papermill 执行训练笔记本 04、复用已有结果、对比表、学习曲线。

papermill 把 04 当作一个函数来调用：每种策略注入一组参数执行一次，执行过的副本保存在
``outputs/<档位>/notebooks/04_train_<策略>.ipynb``。05、07 找不到检查点时也用这里的
``ensure_checkpoint()`` 补训练一次（只在 demo / smoke 档位，几秒到几分钟）。
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from . import paths
from .checkpoints import CheckpointNotFound, checkpoint_path, metrics_path, read_metrics
from .config import resolve_settings
from .models import STRATEGIES, STRATEGY_NAMES, weights_cache_path
from .progress import progress_bar
from .runner import execute_notebook
from .train import with_training_defaults

if TYPE_CHECKING:  # 只用于类型注解
    import pandas as pd

__all__ = [
    "strategy_label", "StrategyRunFailed", "ensure_checkpoint", "run_strategies", "strategy_comparison",
    "comparison_caveats", "plot_strategy_curves",
]

# 判断“已有结果可以复用”时必须相同的设置：同样的数据、种子、轮数、图片尺寸、权重和训练超参数
SAME_RUN_KEYS = (
    "dataset", "per_class_limit", "val_fraction", "seed", "epochs", "max_batches", "weights",
    "image_size", "resize_size", "batch_size", "lr", "strategy", "arch", "feature_cache",
)
# 执行过的 04 副本里的标记：讲义据此把它归入“训练记录”，而不是当成一节课
RECORD_METADATA_KEY = "course_training_run"


def strategy_label(strategy: str) -> str:
    """策略的中文名加英文代号，例如“微调全部层（finetune）”（表格和图例用）。"""
    return f"{STRATEGY_NAMES[strategy]}（{strategy}）" if strategy in STRATEGY_NAMES else str(strategy)


class StrategyRunFailed(RuntimeError):
    """用 papermill 执行训练笔记本 04 时出错。"""


class Notes(list):
    """几条说明文字：是普通的列表，在笔记本里显示成一个项目列表（不用 print）。"""

    def _repr_markdown_(self) -> str:
        return "\n".join(f"- {note}" for note in self) if self else "（没有需要特别注意的地方。）"


# ---------------------------------------------------------------- 执行训练笔记本


def _run_training_notebook(profile: str, strategy: str, parameters: dict, notebook=None) -> Path:
    """用 papermill 执行一次训练笔记本，副本写到 ``outputs/<档位>/notebooks/04_train_<策略>.ipynb``。"""
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
        _mark_training_record(output, strategy, injected)
    return output


def _mark_training_record(output: Path, strategy: str, injected: dict) -> None:
    """在执行过的副本里记下“这是一次训练记录”和注入的参数（讲义按它分组）。"""
    import nbformat

    if not output.exists():
        return
    nb = nbformat.read(output, as_version=4)
    nb.metadata[RECORD_METADATA_KEY] = {"strategy": strategy, "parameters": dict(injected)}
    nbformat.write(nb, output)


def ensure_checkpoint(profile: str, strategy: str, run_missing: bool | None = None, notebook=None) -> Path:
    """返回 04 训练出的最优检查点路径；还没有时按档位处理。

    参数：
        run_missing：找不到检查点时是否当场用 papermill 运行 04 来训练一个。
            None 表示只在 demo / smoke 档位这样做（几秒到几分钟）；full / quick 档位训练较久，
            直接报错，提示先运行 04。
        notebook：训练笔记本（默认 notebooks/04_train.ipynb；测试时换成小笔记本）。
    """
    path = Path(checkpoint_path(profile, strategy, kind="best"))
    if path.exists():
        return path
    if run_missing is None:
        run_missing = profile in ("demo", "smoke")
    if not run_missing:
        raise CheckpointNotFound(
            f"还没有 {profile} 档位、{strategy} 策略的检查点（{paths.display_path(path)}）。"
            f"先运行 04_train.ipynb（parameters 单元格里设 PROFILE = {profile!r}、STRATEGY = {strategy!r}），"
            f"或执行 python -m course_utils run --profile {profile} --only 04 -p STRATEGY={strategy}"
        )
    print(f"还没有 {strategy} 策略的检查点：现在用 papermill 运行 04_train.ipynb（{profile} 档位）来训练一个……")
    executed = _run_training_notebook(profile, strategy, {}, notebook)
    print(f"训练完成，执行过的笔记本在 {paths.display_path(executed)}")
    return path


# ---------------------------------------------------------------- 复用已有结果


def _load_metrics(profile: str, strategy: str) -> dict | None:
    path = Path(metrics_path(profile, strategy))
    return read_metrics(path) if path.exists() else None


def _reuse_blocker(profile: str, strategy: str, parameters: dict) -> str | None:
    """已有结果为什么不能复用（一句话）；能复用时返回 None。

    能复用的条件：有指标 JSON，设置逐项相同（按 04 补全默认值之后比较），而且不是这种情况：
    需要预训练权重的策略上次没拿到权重（退回了随机初始化），而现在本机已经有了这份权重。
    （本机还是没有时照样复用：离线时重新训练只会再退回随机初始化，白花时间；对比表和说明会写明是随机初始化。）
    """
    metrics = _load_metrics(profile, strategy)
    if metrics is None:
        return "还没有训练结果"
    lowered = {key.lower(): value for key, value in parameters.items()}
    requested = resolve_settings(profile, **lowered, strategy=strategy)
    expected = with_training_defaults(requested).to_dict()  # 与 04 补全默认值的方式相同
    stored = metrics.get("settings", {})
    changed = sorted(key for key in set(SAME_RUN_KEYS) | set(lowered) if stored.get(key) != expected.get(key))
    if changed:
        return f"设置不同（{'、'.join(changed)}）"
    wanted = expected.get("weights")
    if strategy != "scratch" and wanted is not None and metrics.get("weights") is None \
            and _weights_on_this_machine(expected.get("arch", "resnet18"), wanted):
        return "上次没有用上预训练权重，现在本机有了"
    return None


def _weights_on_this_machine(arch: str, weights) -> bool:
    """预训练权重现在是否就在本机：本地权重文件存在，或 torchvision 权重已在 torch hub 缓存里。"""
    if Path(str(weights)).expanduser().is_file():
        return True
    try:
        return weights_cache_path(arch, weights).is_file()
    except (KeyError, ValueError):  # 既不是存在的文件，也不是这个模型的 torchvision 权重名
        return False


def _finished_run_matches(profile: str, strategy: str, parameters: dict) -> bool:
    """已有的训练结果能否直接复用（见 ``_reuse_blocker``）。"""
    return _reuse_blocker(profile, strategy, parameters) is None


def run_strategies(profile: str, strategies=STRATEGIES, parameters: dict | None = None,
                   force: bool = False, notebook=None) -> "pd.DataFrame":
    """在完全相同的条件下，用 papermill 为每种策略各执行一次训练笔记本 04，返回对比表。

    参数：
        parameters：传给 04 的其余参数（如 ``{"EPOCHS": 3, "WEIGHTS": "路径"}``），值为 None 的项用档位默认值。
        force：True 时一律重新训练；否则已有结果能复用（见 ``_reuse_blocker``）时直接复用。
        notebook：训练笔记本路径（默认 notebooks/04_train.ipynb；测试时换成小笔记本）。
    返回：
        ``strategy_comparison`` 的表，多一列“来源”（复用已有结果 / 本次训练）。
    """
    parameters = {k: v for k, v in (parameters or {}).items()
                  if v is not None and k.upper() not in ("PROFILE", "STRATEGY")}
    sources = {}
    bar = progress_bar(list(strategies), desc="三种策略", unit="个")
    for strategy in bar:
        bar.set_postfix_str(strategy)  # 进度条上显示正在处理哪种策略
        blocker = "指定了重新训练（FORCE）" if force else _reuse_blocker(profile, strategy, parameters)
        if blocker is None:
            sources[strategy] = "复用已有结果"
            continue
        _run_training_notebook(profile, strategy, parameters, notebook)
        sources[strategy] = f"本次训练：{blocker}"
    table = strategy_comparison(profile, strategies)
    table.insert(0, "来源", [sources[s] for s in strategies])
    return table


# ---------------------------------------------------------------- 对比表与说明


def _all_metrics(profile: str, strategies) -> dict:
    found = {s: _load_metrics(profile, s) for s in strategies}
    missing = [s for s, m in found.items() if m is None]
    if missing:
        raise FileNotFoundError(
            f"{profile} 档位还没有这些策略的训练结果：{'、'.join(missing)}。"
            "先运行 06_compare.ipynb 的训练单元格（cu.run_strategies），或分别运行 04_train.ipynb。"
        )
    return found


def _epoch_seconds(metrics: dict) -> tuple[float | None, float | None]:
    """(每轮训练用时, 提取特征缓存的用时)，单位秒。

    缓存特征时，04 把提取特征的时间算进了第 1 轮。指标里有 ``cache_seconds`` 就直接用；
    否则用第 1 轮减去其余各轮的平均值来估计。只训练了 1 轮时分不开，缓存用时记为 None，
    每轮用时包含缓存。
    """
    seconds = [h["seconds"] for h in metrics.get("history") or [] if h.get("seconds") is not None]
    if not seconds:
        return metrics.get("seconds_per_epoch"), None
    if not metrics.get("feature_cache"):
        return statistics.fmean(seconds), None
    if metrics.get("cache_seconds") is not None:
        cache = float(metrics["cache_seconds"])
        return (sum(seconds) - cache) / len(seconds), cache
    if len(seconds) < 2:
        return seconds[0], None
    per_epoch = statistics.fmean(seconds[1:])
    return per_epoch, max(0.0, seconds[0] - per_epoch)


def strategy_comparison(profile: str, strategies=STRATEGIES) -> "pd.DataFrame":
    """读取各策略的指标 JSON，整理成一张对比表（每行一种策略）。

    “每轮用时”不含提取特征缓存的时间，后者单独成列（只有 freeze 缓存特征时才有）。
    """
    import pandas as pd

    rows = []
    for strategy, m in _all_metrics(profile, strategies).items():
        per_epoch, cache = _epoch_seconds(m)
        rows.append({
            "策略": strategy_label(strategy),
            "测试集准确率": m.get("test_acc"),
            "最佳验证准确率": m.get("best_val_acc"),
            "最佳轮次": m.get("best_epoch"),
            "轮数": m.get("epochs"),
            "可训练参数": m.get("trainable_params"),
            "总参数": m.get("total_params"),
            "每轮用时（秒）": per_epoch,
            "特征缓存用时（秒）": cache,
            "总用时（秒）": m.get("seconds_total"),
            "初始权重": m.get("weights") or "随机初始化",
            "特征缓存": "是" if m.get("feature_cache") else "否",
            "设备": m.get("device"),
        })
    return pd.DataFrame(rows).set_index("策略")


def comparison_caveats(profile: str, strategies=STRATEGIES) -> Notes:
    """读对比表之前要知道的事：数据是不是 fruit30、有没有真的用上预训练权重、freeze 是否缓存了特征。"""
    metrics = _all_metrics(profile, strategies)
    notes = Notes()
    if profile in ("demo", "smoke"):
        notes.append(f"这次用的是课程生成的 {profile} 数据集，不是 fruit30：数字只用来演示流程，不代表真实效果。")
    notes += _random_weights_notes(metrics)
    notes += _feature_cache_notes(metrics)
    for strategy, m in metrics.items():
        if m.get("weights") and m.get("weights_note"):  # 用上了预训练权重：说明来源
            notes.append(f"{strategy}：{m['weights_note']}")
    return notes


# 需要预训练权重的策略从随机初始化开始时，这意味着什么（06 的说明和讲义的提示框共用）
RANDOM_START_EFFECTS = {
    "freeze": "freeze 只是在一个随机的、冻结的主干网络上训练分类头，几乎学不到东西",
    "finetune": "finetune 等同于从头训练（只是主干网络的学习率更小）",
}


def random_start(metrics: dict) -> tuple[list[str], str]:
    """{策略: 指标} 里需要预训练权重、却从随机初始化开始的策略（按课程里的顺序），以及对它们意味着什么的一句话。"""
    order = {strategy: i for i, strategy in enumerate(STRATEGIES)}
    strategies = sorted((s for s, m in metrics.items() if s != "scratch" and not m.get("weights")),
                        key=lambda s: (order.get(s, len(order)), s))
    return strategies, "；".join(RANDOM_START_EFFECTS[s] for s in strategies if s in RANDOM_START_EFFECTS)


def _random_weights_notes(metrics: dict) -> list[str]:
    """需要预训练权重的策略却是随机初始化时，说明这对每种策略意味着什么、怎样补救。"""
    strategies, details = random_start(metrics)
    if not strategies:
        return []
    by_design = all(metrics[s].get("settings", {}).get("weights", "") is None for s in strategies)
    if by_design:  # 设置里就写着不用权重（例如 smoke 档位）
        remedy = "想看迁移学习的作用，换用 demo、quick 或 full 档位。"
    else:
        remedy = ("拿到权重后（联网，或在 parameters 单元格里写 WEIGHTS = \"权重文件路径\"）重新运行本笔记本："
                  "权重已经在本机时，没用上权重的旧结果不会被复用；联网下载的话设 FORCE = True。")
    why = "按设置没有用" if by_design else "这次没有用上"
    return [
        f"{'、'.join(strategies)} {why} ImageNet 预训练权重（随机初始化）" + (f"：{details}" if details else "")
        + f"。所以它们和 scratch 的差别不能说明迁移学习的作用。{remedy}"
    ]


def _feature_cache_notes(metrics: dict) -> list[str]:
    """缓存特征的策略与其他策略的训练条件并不完全相同：说清差别在哪里。"""
    notes = []
    for strategy, m in metrics.items():
        if not m.get("feature_cache"):
            continue
        _, cache = _epoch_seconds(m)
        when = f"约 {cache:.1f} 秒，表中单独列出" if cache is not None else "只训练了 1 轮，算在这一轮的用时里"
        notes.append(
            f"{strategy} 缓存了主干网络的特征：每张训练图只在第 1 轮前经过主干一次（{when}），"
            "之后每轮只训练分类头，而且训练时没有数据增广；其他策略每轮都经过整个网络并做数据增广。"
            "所以每轮用时的差别有一部分来自缓存，准确率的差别有一部分来自有没有数据增广。"
        )
    return notes


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
        if len(all_epochs) <= 25:  # 轮数不多时每一轮都标出来（轮数只有整数）
            ax.set_xticks(sorted(all_epochs))
    fig.tight_layout()
    return fig
