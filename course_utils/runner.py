"""按顺序无人值守地执行课程笔记本（papermill），并汇总结果（``python -m course_utils run --help``）。

执行过的笔记本写到 ``outputs/<档位>/notebooks/``；任何一个笔记本出错，就指出是哪个笔记本、哪个单元格、什么错误，
保留出错的那份执行结果供检查，并以非零状态退出。
"""

from __future__ import annotations

import ast
import logging
import os
import signal
import threading
import time
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .config import resolve_profile
from .progress import HEADLESS_ENV_VAR

__all__: list[str] = []  # 命令行 python -m course_utils run 用

INTERRUPT_GRACE_SECONDS = 5  # Ctrl+C 之后给正在执行的单元格多少秒停下来，过了就直接结束内核


class NotebookFailed(RuntimeError):
    """某个笔记本执行出错，或者被学习者按 Ctrl+C 中断。

    属性：notebook、cell（单元格序号，从 1 开始）、error、output（执行到出错处的副本）、interrupted，
    以及 run_notebooks 填上的 completed（之前通过的笔记本结果）和 seconds（出错前执行了多久）。
    """

    def __init__(self, notebook: Path, cell: int | None, error: str, output: Path, interrupted: bool = False,
                 started: bool = True):
        self.notebook, self.cell, self.error, self.output, self.interrupted = notebook, cell, error, output, interrupted
        self.completed: list[NotebookResult] = []
        self.seconds: float | None = None
        if interrupted:
            when = f"笔记本 {notebook.name} 执行到一半" if started else f"在开始执行笔记本 {notebook.name} 之前"
            what = f"{when}被中断（Ctrl+C）。之前通过的笔记本都已保存，重新运行会从头执行。"
        else:
            what = f"笔记本 {notebook.name} 在{f'第 {cell} 个单元格' if cell else '启动或保存时'}出错：{error}"
        copy = f"\n执行到这里的副本保存在 {output}，可以在 JupyterLab 里打开查看。" if started else ""
        super().__init__(what + copy)


@dataclass
class NotebookResult:
    name: str
    seconds: float
    status: str  # "通过" | "失败"


def list_notebooks(notebooks_dir: Path | None = None, only: list[str] | None = None) -> list[Path]:
    """按编号列出核心笔记本（``NN_name.ipynb``）；only 给出编号或文件名前缀时只取这些。"""
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS_DIR)
    found = sorted(p for p in notebooks_dir.glob("*.ipynb") if paths.NOTEBOOK_PATTERN.match(p.name))
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


def run_notebooks(profile: str | None = None, only: list[str] | None = None, parameters: dict | None = None,
                  notebooks_dir: Path | None = None) -> list[NotebookResult]:
    """依次执行笔记本，返回每个笔记本的结果；出错或按了 Ctrl+C 时抛出 NotebookFailed。"""
    profile = resolve_profile(profile)
    notebooks_dir = Path(notebooks_dir or paths.NOTEBOOKS_DIR).resolve()
    out_dir = paths.output_dir(profile, "notebooks")
    os.environ["COURSE_PROFILE"] = profile
    results = []
    with ctrl_c_guard() as ctrl_c:
        for notebook, output in _planned_runs(notebooks_dir, out_dir, only):
            if ctrl_c.pressed.is_set():  # 两个笔记本之间按下的
                failed = NotebookFailed(notebook, None, "KeyboardInterrupt", output, interrupted=True, started=False)
                failed.completed, failed.seconds = results, 0.0
                raise failed
            name = output.relative_to(out_dir).as_posix()
            print(f"▶ {name}（档位 {profile}）", flush=True)
            output.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            error = _execute_watched(notebook, output, {"PROFILE": profile, **(parameters or {})}, ctrl_c)
            if ctrl_c.pressed.is_set() or error is not None:  # 按了 Ctrl+C、单元格出错、内核起不来、超时
                failed = (NotebookFailed(notebook, None, "KeyboardInterrupt", output, interrupted=True)
                          if ctrl_c.pressed.is_set() else _describe_failure(notebook, output, error))
                failed.completed, failed.seconds = results, time.perf_counter() - start
                raise failed from error
            results.append(NotebookResult(name, time.perf_counter() - start, "通过"))
    return results


class CtrlC:
    """runner 执行期间的 Ctrl+C（SIGINT）：信号处理函数只记下“按过了”和按了几次，不在任意位置抛出 KeyboardInterrupt。

    为什么：KeyboardInterrupt 落在 papermill 的 asyncio 事件循环里（内核启动、清理、垃圾回收的半途中）时，
    会被吞掉（照常结束，退出码 0）或留下没人接的任务报错。所以 papermill 在工作线程里执行（``_execute_watched``），
    主线程只看这个标记，看到就停掉内核，由 ``run_notebooks`` 报告“中断”。
    """

    def __init__(self):
        self.pressed, self.count = threading.Event(), 0  # count：按了几次（第二次立即结束内核）

    def handle(self, signum, frame) -> None:
        self.count += 1
        self.pressed.set()


_ACTIVE_GUARD: CtrlC | None = None


@contextmanager
def ctrl_c_guard():
    """在主线程里装上 CtrlC 的信号处理函数，结束时恢复原来的；已经装过（嵌套）时沿用外层的。
    不在主线程里（只有主线程能设置信号处理函数）时产出一个不会被按下的 CtrlC：照旧执行。"""
    global _ACTIVE_GUARD
    if _ACTIVE_GUARD is not None or threading.current_thread() is not threading.main_thread():
        yield _ACTIVE_GUARD or CtrlC()
        return
    guard = CtrlC()
    previous = signal.signal(signal.SIGINT, guard.handle)
    _ACTIVE_GUARD = guard
    try:
        yield guard
    finally:
        _ACTIVE_GUARD = None
        signal.signal(signal.SIGINT, previous)


def _execute_watched(notebook: Path, output: Path, parameters: dict, ctrl_c: CtrlC) -> BaseException | None:
    """执行一个笔记本，返回出错时的异常（成功时 None）。papermill 在工作线程里执行（那里 nbclient 不装自己的
    SIGINT 处理函数），主线程每 0.1 秒看一眼：按了 Ctrl+C 就停掉内核，等工作线程收尾（保存执行到一半的副本）。"""
    kernels: list = []  # papermill 为这个笔记本创建的内核管理器
    ready = threading.Event()  # 内核已启动、回复了 kernel_info，开始执行单元格
    outcome: dict = {}

    def work():
        try:
            execute_notebook(notebook, output, parameters, progress_bar=True,
                             kernel_manager_class=_recording_kernel_manager(kernels),
                             on_notebook_start=lambda **_: ready.set())
        except BaseException as exc:  # 交给主线程报告
            outcome["error"] = exc

    worker = threading.Thread(target=work, name=f"papermill {notebook.name}", daemon=True)
    worker.start()
    while worker.is_alive() and not ctrl_c.pressed.is_set():
        worker.join(0.1)
    if worker.is_alive():
        _stop_kernels(worker, kernels, ready, ctrl_c, notebook.name)
    return outcome.get("error")


def _recording_kernel_manager(kernels: list):
    """一个把自己记进 kernels 的 AsyncKernelManager 子类（nbclient 的 kernel_manager_class）。"""
    from jupyter_client.manager import AsyncKernelManager

    class RecordingKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            kernels.append(self)

    return RecordingKernelManager


def _stop_kernels(worker: threading.Thread, kernels: list, ready: threading.Event, ctrl_c: CtrlC, name: str) -> None:
    """按了 Ctrl+C 之后：让正在执行的单元格停下（向内核发 SIGINT，和 JupyterLab 的“中断”一样）；
    内核还在启动（这时它不理会 SIGINT）、INTERRUPT_GRACE_SECONDS 秒后还没停、或者又按了一次 Ctrl+C，
    就直接结束内核进程组。一直到 papermill 收尾（保存执行到一半的副本）为止。"""
    print(f"\n收到 Ctrl+C：正在停止 {name}……（再按一次 Ctrl+C 立即结束内核）", flush=True)
    papermill_log = logging.getLogger("papermill")
    level = papermill_log.level
    papermill_log.setLevel(logging.CRITICAL)  # 内核是我们停掉的，不需要 papermill 再报一遍“内核死了”
    first, last_interrupt = time.monotonic(), 0.0
    try:
        while worker.is_alive():
            now = time.monotonic()
            force = not ready.is_set() or ctrl_c.count > 1 or now - first > INTERRUPT_GRACE_SECONDS
            for manager in list(kernels):
                process = getattr(getattr(manager, "provisioner", None), "process", None)
                if process is None or process.poll() is not None:
                    continue
                if force:
                    _signal_kernel(process, interrupt=False)
                elif now - last_interrupt >= 1:  # 内核在两个单元格之间时会忽略 SIGINT：每秒再发一次
                    _signal_kernel(process, interrupt=True)
                    last_interrupt = now
            worker.join(0.1)
    finally:
        papermill_log.setLevel(level)


def _signal_kernel(process, interrupt: bool) -> None:
    """中断（SIGINT）或结束（SIGKILL）内核的整个进程组（jupyter_client 让内核自成一个会话，
    DataLoader 之类的子进程也在里面）；Windows 上不能发 SIGINT，只能结束进程。"""
    with suppress(OSError):  # 进程刚好自己退出了
        if os.name == "posix":
            os.killpg(os.getpgid(process.pid), signal.SIGINT if interrupt else signal.SIGKILL)
        elif not interrupt:
            process.kill()


def execute_notebook(notebook: Path, output: Path, parameters: dict, *, progress_bar: bool, **client_options) -> None:
    """用 papermill 无人值守地执行一个笔记本（runner 和 06 的策略对比共用）：工作目录是笔记本所在的文件夹，
    内核 python3，内核日志不刷屏（出错时的中断日志也不要），子内核用文字进度条。
    client_options 原样传给 nbclient 的 NotebookClient（runner 用它记下内核、知道内核何时就绪）。"""
    import papermill as pm

    old = os.environ.get(HEADLESS_ENV_VAR)
    os.environ[HEADLESS_ENV_VAR] = "1"  # 子内核继承它：网页进度条在无人值守的副本里只会留下一行 “HBox(...)”
    try:
        pm.execute_notebook(
            str(notebook), str(output), parameters=parameters, cwd=str(notebook.parent),
            kernel_name="python3", progress_bar=progress_bar, extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            **client_options,
        )
    finally:
        os.environ.pop(HEADLESS_ENV_VAR, None)
        if old is not None:
            os.environ[HEADLESS_ENV_VAR] = old


def _planned_runs(notebooks_dir: Path, out_dir: Path, only: list[str] | None) -> list[tuple[Path, Path]]:
    """(要执行的笔记本, 执行结果的位置)：先按编号执行核心笔记本，再执行 solutions/ 里的参考答案。"""
    core = list_notebooks(notebooks_dir, only)
    solutions = [p for p in list_notebooks(notebooks_dir / "solutions")
                 if not only or any(map(p.name.startswith, only))]
    return [(p, out_dir / p.name) for p in core] + [(p, out_dir / "solutions" / p.name) for p in solutions]


def _describe_failure(notebook: Path, output: Path, exc: BaseException) -> NotebookFailed:
    """把 papermill 的异常整理成 NotebookFailed（带上出错的单元格序号）。"""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError) and exc.ename != "KeyboardInterrupt":  # 某个单元格出错
        cell = _original_cell_number(notebook, exc.source)
        return NotebookFailed(notebook, cell, f"{exc.ename}: {exc.evalue}", output)
    if isinstance(exc, (KeyboardInterrupt, PapermillExecutionError)):  # 在这里或在内核里按了 Ctrl+C
        return NotebookFailed(notebook, None, "KeyboardInterrupt", output, interrupted=True)
    return NotebookFailed(notebook, None, f"{type(exc).__name__}: {exc}", output)


def _original_cell_number(notebook: Path, source: str) -> int | None:
    """出错单元格在原笔记本里是第几个（从 1 开始，含 Markdown 单元格；papermill 插入的参数单元格不算）。"""
    import nbformat

    cells = enumerate(nbformat.read(notebook, as_version=4).cells, start=1)
    return next((n for n, c in cells if c.cell_type == "code" and c.source.strip() == (source or "").strip()), None)


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
    """``python -m course_utils run`` 的入口；返回进程退出码（中断时 130）。"""
    profile = resolve_profile(args.profile)
    with ctrl_c_guard() as ctrl_c:
        try:
            results = run_notebooks(profile, args.only, parse_parameters(args.param), args.notebooks_dir)
        except NotebookFailed as failed:
            print(format_summary(failed.completed, failed))
            print(f"\n[{'中断' if failed.interrupted else '失败'}] {failed}")
            return 130 if failed.interrupted else 1
        print(format_summary(results))
        print(f"\n执行过的笔记本在 {paths.output_dir(profile, 'notebooks')}")
        if ctrl_c.pressed.is_set():  # 最后一个笔记本刚执行完时按下的
            print(f"\n[中断] 全部笔记本都已执行完，讲义没有生成（Ctrl+C）。需要时运行 "
                  f"python -m course_utils handouts --profile {profile}。")
            return 130
    if getattr(args, "no_handouts", False):
        return 0
    from .handouts import build_handouts

    try:
        for student in (False, True):  # 教师版和学生版（不含参考答案）
            print(f"讲义已生成：{build_handouts(profile, student=student)}")
    except KeyboardInterrupt:
        print(f"\n[中断] 讲义生成到一半被中断（Ctrl+C）。笔记本都已执行完，之后运行 "
              f"python -m course_utils handouts --profile {profile} 重新生成。")
        return 130
    return 0
