"""按顺序无人值守地执行课程笔记本（papermill），并汇总结果。

命令行用法见 ``python -m course_utils run --help``。执行过的笔记本写到
``outputs/<档位>/notebooks/``；任何一个笔记本出错，就指出是哪个笔记本、哪个单元格、什么错误，
保留出错的那份执行结果供检查，并以非零状态退出。
"""

from __future__ import annotations

import ast
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .config import resolve_profile
from .progress import HEADLESS_ENV_VAR

__all__: list[str] = []  # 命令行 python -m course_utils run 用

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


class NotebookFailed(RuntimeError):
    """某个笔记本执行出错，或者被学习者按 Ctrl+C 中断。

    属性：notebook（路径）、cell（单元格序号，从 1 开始）、error、output（执行到出错处的副本）、
    completed（出错之前已经通过的笔记本结果）、seconds（出错前执行了多久）、interrupted（是否是中断）。
    """

    def __init__(self, notebook: Path, cell: int | None, error: str, output: Path, interrupted: bool = False):
        self.notebook, self.cell, self.error, self.output = notebook, cell, error, output
        self.completed: list[NotebookResult] = []
        self.seconds: float | None = None
        self.interrupted = interrupted
        if interrupted:
            what = f"笔记本 {notebook.name} 执行到一半被中断（Ctrl+C）。之前通过的笔记本都已保存，重新运行会从头执行。"
        else:
            where = f"第 {cell} 个单元格" if cell else "启动或保存时"
            what = f"笔记本 {notebook.name} 在{where}出错：{error}"
        super().__init__(f"{what}\n执行到这里的副本保存在 {output}，可以在 JupyterLab 里打开查看。")


@dataclass
class NotebookResult:
    name: str
    seconds: float
    status: str  # "通过" | "失败"


def list_notebooks(notebooks_dir: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """按编号列出核心笔记本（``NN_name.ipynb``）；only 给出编号或文件名前缀时只取这些。"""
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS_DIR)
    found = sorted(p for p in notebooks_dir.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    if only:
        found = [p for p in found if any(p.name.startswith(prefix) for prefix in only)]
        if not found:
            raise FileNotFoundError(f"在 {notebooks_dir} 里找不到编号为 {' '.join(only)} 的笔记本。")
    return found


def parse_parameters(pairs: list[str] | None) -> dict:
    """把命令行的 ``KEY=VALUE`` 列表转成字典；VALUE 按 Python 字面量解析（3、0.01、None、"a"）。"""
    parameters = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"参数 {pair!r} 的格式不对，应写成 KEY=VALUE，例如 -p EPOCHS=3。")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # 不是字面量就当字符串，例如 -p STRATEGY=finetune
        parameters[key.strip()] = value
    return parameters


def run_notebooks(
    profile: str | None = None,
    only: list[str] | None = None,
    parameters: dict | None = None,
    notebooks_dir: Path | None = None,
) -> list[NotebookResult]:
    """依次执行笔记本，返回每个笔记本的结果；出错时抛出 NotebookFailed。"""
    profile = resolve_profile(profile)
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS_DIR).resolve()
    out_dir = paths.output_dir(profile, "notebooks")
    os.environ["COURSE_PROFILE"] = profile
    results = []
    for notebook, output in _planned_runs(notebooks_dir, out_dir, only):
        name = output.relative_to(out_dir).as_posix()
        print(f"▶ {name}（档位 {profile}）", flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            execute_notebook(notebook, output, {"PROFILE": profile, **(parameters or {})}, progress_bar=True)
        except (Exception, KeyboardInterrupt) as exc:  # 单元格出错、内核起不来、超时、按了 Ctrl+C：都指名道姓地报告
            failed = _describe_failure(notebook, output, exc)
            failed.completed, failed.seconds = results, time.perf_counter() - start
            raise failed from exc
        results.append(NotebookResult(name, time.perf_counter() - start, "通过"))
    return results


@contextmanager
def headless_children():
    """执行期间设置 COURSE_HEADLESS=1：papermill 启动的子内核继承它，改用文字进度条
    （网页进度条在无人值守执行的副本里只会留下一行 “HBox(...)”）。结束后恢复原值。"""
    old = os.environ.get(HEADLESS_ENV_VAR)
    os.environ[HEADLESS_ENV_VAR] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(HEADLESS_ENV_VAR, None)
        else:
            os.environ[HEADLESS_ENV_VAR] = old


def execute_notebook(notebook: Path, output: Path, parameters: dict, *, progress_bar: bool) -> None:
    """用 papermill 无人值守地执行一个笔记本（runner 和 06 的策略对比共用）：工作目录是笔记本所在的文件夹，
    内核 python3，内核日志不刷屏（出错时的中断日志也不要），子内核用文字进度条。"""
    import papermill as pm

    with headless_children():
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters, cwd=str(notebook.parent),
            kernel_name="python3", progress_bar=progress_bar, extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
        )


def _planned_runs(notebooks_dir: Path, out_dir: Path, only: list[str] | None) -> list[tuple[Path, Path]]:
    """(要执行的笔记本, 执行结果的位置)：先按编号执行核心笔记本，再执行 solutions/ 里的参考答案。"""
    core = list_notebooks(notebooks_dir, only)
    solutions_dir = notebooks_dir / "solutions"
    solutions = []
    if solutions_dir.is_dir():
        solutions = [p for p in list_notebooks(solutions_dir) if not only or any(p.name.startswith(o) for o in only)]
    return [(p, out_dir / p.name) for p in core] + [(p, out_dir / "solutions" / p.name) for p in solutions]


def _describe_failure(notebook: Path, output: Path, exc: Exception) -> NotebookFailed:
    """把 papermill 的异常整理成 NotebookFailed（带上出错的单元格序号）。"""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, KeyboardInterrupt) or (isinstance(exc, PapermillExecutionError) and exc.ename == "KeyboardInterrupt"):
        return NotebookFailed(notebook, None, "KeyboardInterrupt", output, interrupted=True)
    if isinstance(exc, PapermillExecutionError):
        cell = _original_cell_number(notebook, exc.source)
        return NotebookFailed(notebook, cell, f"{exc.ename}: {exc.evalue}", output)
    return NotebookFailed(notebook, None, f"{type(exc).__name__}: {exc}", output)


def _original_cell_number(notebook: Path, source: str) -> int | None:
    """出错单元格在原笔记本里是第几个（从 1 开始，含 Markdown 单元格）。

    papermill 会插入一个注入参数的单元格，所以不能直接用它报告的序号。
    """
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    for number, cell in enumerate(cells, start=1):
        if cell.cell_type == "code" and cell.source.strip() == (source or "").strip():
            return number
    return None


def format_summary(results: list[NotebookResult], failed: NotebookFailed | None = None) -> str:
    """汇总表：笔记本、用时（秒）、状态。"""
    rows = [(r.name, f"{r.seconds:.1f}", r.status) for r in results]
    if failed is not None:
        status = "中断" if failed.interrupted else "失败"
        rows.append((failed.notebook.name, "-" if failed.seconds is None else f"{failed.seconds:.1f}", status))
    width = max([len("笔记本")] + [len(r[0]) for r in rows])
    lines = [f"{'笔记本':<{width - 3}}  {'用时(秒)':>8}  状态", "-" * (width + 20)]
    lines += [f"{name:<{width}}  {sec:>10}  {status}" for name, sec, status in rows]
    total = sum(r.seconds for r in results)
    if failed is not None and failed.seconds is not None:
        total += failed.seconds
    lines.append(f"共 {len(rows)} 个笔记本，用时 {total:.1f} 秒")
    return "\n".join(lines)


def main(args) -> int:
    """``python -m course_utils run`` 的入口；返回进程退出码。"""
    profile = resolve_profile(args.profile)
    results: list[NotebookResult] = []
    try:
        results = run_notebooks(profile, args.only, parse_parameters(args.param), args.notebooks_dir)
    except NotebookFailed as failed:
        print(format_summary(failed.completed, failed))
        print(f"\n[{'中断' if failed.interrupted else '失败'}] {failed}")
        return 130 if failed.interrupted else 1
    print(format_summary(results))
    print(f"\n执行过的笔记本在 {paths.output_dir(profile, 'notebooks')}")
    if getattr(args, "no_handouts", False):
        return 0
    from .handouts import build_handouts

    for student in (False, True):  # 教师版和学生版（不含参考答案）
        print(f"讲义已生成：{build_handouts(profile, student=student)}")
    return 0

