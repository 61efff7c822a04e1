"""基准测试的公共部分：计时、机器信息、结果表格，以及写出 JSON / Markdown 结果文件。

所有比较都在同一台机器、同一次运行里完成，结果以“相对基线的倍数”报告：
绝对秒数随机器和负载变化，倍数在同一次运行里才可比。
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# ---------------------------------------------------------------- 计时


def synchronize(device) -> None:
    """GPU 上的运算是异步的：计时前后先等它算完（CPU 上什么也不做）。"""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """执行 fn()，返回 (fn 的返回值, 用时秒数)。"""
    synchronize(device)
    began = time.perf_counter()
    value = fn()
    synchronize(device)
    return value, time.perf_counter() - began


def course_channels_last(device) -> bool:
    """cu.fit 默认是否用 channels_last 训练：CUDA 和 CPU 上用（见 course_utils/train.py 的 fit）。"""
    import torch

    return torch.device(device).type in ("cuda", "cpu")


def median(values) -> float:
    """中位数：比平均值更不怕偶尔被别的进程打断的那一次。"""
    return float(statistics.median(values))


@contextlib.contextmanager
def quiet():
    """暂时吞掉标准输出和标准错误（课程函数的进度条、提示），只保留基准测试自己的表格。"""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


class CpuMonitor:
    """一段时间里别的进程占了多少 CPU：全系统的忙碌时间减去本进程（含子进程）的 CPU 时间。

    基准测试要独占机器才准；``other_share()`` 明显大于 0 时，这一段的绝对用时偏慢，
    同一段里交替测得的倍数受影响较小。没有 psutil 时返回 None。
    """

    def __init__(self):
        self.began = time.perf_counter()
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            import psutil
        except ImportError:
            return None
        times = psutil.cpu_times()
        busy = sum(getattr(times, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))
        me = psutil.Process()
        own = sum(me.cpu_times()[:4])  # user、system、已结束子进程的 user、system
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                own += sum(child.cpu_times()[:2])
        return busy, own

    def other_share(self) -> float | None:
        """别的进程平均占用了全部核的几分之几（0–1）。"""
        end = self._sample()
        if self.start is None or end is None:
            return None
        elapsed = (time.perf_counter() - self.began) * core_count()
        others = (end[0] - self.start[0]) - (end[1] - self.start[1])
        return round(min(max(others / max(elapsed, 1e-9), 0.0), 1.0), 3)


# ---------------------------------------------------------------- 机器信息


def cpu_model() -> str:
    """CPU 型号（Linux 读 /proc/cpuinfo，其他系统用 platform.processor()）。"""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def core_count() -> int:
    """本进程真正能用的 CPU 核数（容器或任务调度限制后的数目）。"""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def load_average() -> list[float] | None:
    """系统的 1、5、15 分钟平均负载（Windows 没有）。"""
    if hasattr(os, "getloadavg"):
        return [round(x, 2) for x in os.getloadavg()]
    return None


def machine_info(device) -> dict:
    """记录在结果里的机器与软件版本。"""
    import torch
    import torchvision

    device = torch.device(device)
    info = {
        "cpu": cpu_model(), "cores": core_count(), "torch_threads": torch.get_num_threads(),
        "device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "python": platform.python_version(), "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__), "platform": platform.platform(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_average_at_start": load_average(),
    }
    return info


def machine_slug(info: dict) -> str:
    """结果文件名：日期-CPU 型号-核数（或 GPU 型号），只含 ASCII 字母、数字和连字符。"""
    name = info["gpu"] or f"{info['cpu']}-{info['cores']}cores"
    slug = "".join(ch.lower() if ch.isascii() and ch.isalnum() else "-" for ch in name)
    slug = "-".join(part for part in slug.split("-") if part)[:48]
    return f"{info['date'][:10]}-{slug}"


# ---------------------------------------------------------------- 结果


@dataclass
class Section:
    """结果里的一节：标题、一张表（每行一个字典）、几条说明。"""

    key: str
    title: str
    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    other_cpu: float | None = None  # 这一节运行期间别的进程占用的 CPU 比例（CpuMonitor）

    def to_markdown(self) -> str:
        lines = [f"## {self.title}", ""]
        if self.seconds:
            others = "" if self.other_cpu is None else f"；其间别的进程占用 CPU {self.other_cpu:.0%}"
            lines += [f"（本节用时 {self.seconds:.0f} 秒{others}）", ""]
        if self.rows:
            lines += [markdown_table(self.rows), ""]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


@dataclass
class Target:
    """一个要达到的指标：实测值、界限、是否达到。"""

    name: str
    value: float
    limit: float
    higher_is_better: bool
    how: str

    @property
    def met(self) -> bool:
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit

    def to_row(self) -> dict:
        sign = "≥" if self.higher_is_better else "≤"
        return {"指标": self.name, "实测": f"{self.value:.2f}", "要求": f"{sign} {self.limit:g}",
                "结果": "达到" if self.met else "未达到", "怎样算的": self.how}


def format_cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: list[dict]) -> str:
    """把一组字典排成 Markdown 表格（列取所有行的键，按第一次出现的顺序）。"""
    widest = max(rows, key=len)  # 列的顺序以键最多的一行为准，其余行多出的键排在后面
    columns = list(dict.fromkeys([*widest, *(key for row in rows for key in row)]))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(results: dict) -> str:
    """整份结果的 Markdown：机器、命令、达标情况，然后每一节一张表。"""
    m = results["machine"]
    lines = [
        "# 性能基准测试结果", "",
        f"- 机器：{m['cpu']}，{m['cores']} 个核（PyTorch 用 {m['torch_threads']} 个线程）；设备 {m['device']}"
        + (f"（{m['gpu']}）" if m["gpu"] else ""),
        f"- 软件：Python {m['python']}，torch {m['torch']}，torchvision {m['torchvision']}；{m['platform']}",
        f"- 时间：{m['date']}；平均负载（1/5/15 分钟）开始时 {m['load_average_at_start']}，"
        f"结束时 {m.get('load_average_at_end')}",
        f"- 命令：`{results['command']}`（共用时 {results['seconds'] / 60:.1f} 分钟）", "",
    ]
    if results["targets"]:
        lines += ["## 目标", "", markdown_table([Target(**t).to_row() for t in results["targets"]]), ""]
        if results.get("quick"):
            lines += ["--quick 只检查流程能不能跑通：数据和轮数都很少，固定开销占了大头，这些数字不作结论。", ""]
    lines += [Section(**s).to_markdown() for s in results["sections"]]
    return "\n".join(lines)


def write_results(results: dict, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """写出 ``<stem>.json`` 和 ``<stem>.md``，返回两个路径。"""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(results), encoding="utf-8")
    return json_path, md_path


def section_dict(section: Section) -> dict:
    return asdict(section)


# ---------------------------------------------------------------- 子进程


def run_probe(module: str, args: list[str], timeout: float, env: dict | None = None) -> dict:
    """在新的 Python 进程里运行 ``python -m benchmarks.<module> ...``，读取它最后一行打印的 JSON。

    每种模式一个新进程：峰值内存（maxrss）不受前一种模式影响，torch.compile 的缓存也互不干扰。
    超时或出错时返回 ``{"error": 中文说明}``，不让整个基准测试停下。
    """
    command = [sys.executable, "-m", f"benchmarks.{module}", *args]
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"超过 {timeout:.0f} 秒仍未结束，已停止"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["没有输出"]
        return {"error": f"子进程退出码 {done.returncode}：{tail[0][:200]}"}
    return json.loads(lines[-1])


def probe_main(argv, *, description: str, flag: str, choices, steps: int, measure) -> int:
    """子进程一侧的入口（与 ``run_probe`` 配对）：解析 ``--<flag> 做法 --device --steps``，
    调用 ``measure(做法, device, steps)``，把结果作为最后一行 JSON 打印出来。"""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(f"--{flag}", dest="mode", required=True, choices=list(choices))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=steps)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.mode, args.device, args.steps)))
    return 0
