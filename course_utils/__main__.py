"""命令行入口：``python -m course_utils <子命令>``。

- ``run``：按顺序执行笔记本（默认档位取环境变量 COURSE_PROFILE，否则 full；``make run`` 用 demo）。
- ``handouts``：把执行过的笔记本生成 HTML 讲义（``--student`` 生成不含参考答案的学生版）。
- ``doctor``：检查环境，逐项打印 [通过]/[失败]/[提示]；有必需项失败时退出码为 1。
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import env, handouts, runner


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m course_utils", description="迁移学习图像分类实战：课程命令行工具")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="按顺序执行课程笔记本，输出写到 outputs/<档位>/")
    sheets = commands.add_parser("handouts", help="把 outputs/<档位>/notebooks/ 里执行过的笔记本生成 HTML 讲义")
    doctor = commands.add_parser("doctor", help="检查环境：Python、依赖版本、设备、中文字体、磁盘、输出目录、数据集")
    for command, what in ((run, "运行档位"), (sheets, "哪个档位的讲义"), (doctor, "按哪个档位检查数据集和磁盘空间")):
        command.add_argument("--profile", choices=["full", "quick", "demo", "smoke"], default=None,
                             help=f"{what}；不给时读取环境变量 COURSE_PROFILE，默认 full")
    run.add_argument("--only", nargs="+", metavar="NN", help="只执行这些编号的笔记本，例如 --only 04 05")
    run.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                     help="传给每个笔记本 parameters 单元格的参数，可重复，例如 -p EPOCHS=3")
    run.add_argument("--notebooks-dir", type=Path, default=None, help=argparse.SUPPRESS)
    run.add_argument("--no-handouts", action="store_true", help="执行完不生成 HTML 讲义")
    run.set_defaults(handler=runner.main)
    sheets.add_argument("--student", action="store_true",
                        help="学生版：去掉打了 solution 标签的单元格和参考答案，写到 handouts/student/")
    sheets.set_defaults(handler=handouts.main)
    doctor.set_defaults(handler=lambda args: env.doctor(args.profile))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except KeyboardInterrupt:  # 子命令自己没有接住的 Ctrl+C（例如还在导入依赖时）：不打印一大段 Traceback
        print("\n[中断] 按了 Ctrl+C，已停止。", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
