"""命令行入口：``python -m benchmarks [--quick] [--only 1 3] [--course]``。"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import common

SECTIONS = ("strategies", "throughput", "loading", "memory", "roofline", "lr_sweep")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="课程的性能基准测试（结果写到 benchmarks/results/）")
    parser.add_argument("--quick", action="store_true", help="1–2 分钟的快速检查：更少的数据和批次，结果只看是否跑通")
    parser.add_argument("--only", nargs="+", metavar="N", help="只跑这几节（编号 1–6 或名字，course 即 --course），例如 --only 1 5")
    parser.add_argument("--course", action="store_true",
                        help="另外在 fruit30 大小的生成数据上计时 quick 档位的整个课程（约 15 分钟）")
    parser.add_argument("--out", default=str(common.RESULTS_DIR), help="结果目录（默认 benchmarks/results/）")
    parser.add_argument("--name", default=None, help="结果文件名（不含扩展名）；默认 日期-机器，--quick 时加 -quick")
    return parser


def selected(only: list[str] | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    chosen = []
    for item in only:
        name = SECTIONS[int(item) - 1] if item.isdigit() and 1 <= int(item) <= len(SECTIONS) else item
        name = "course_time" if name == "course" else name
        if name not in (*SECTIONS, "course_time"):
            raise SystemExit(f"没有名为 {item!r} 的一节。可选：1–6、{'、'.join(SECTIONS)}，或 course。")
        chosen.append(name)
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("COURSE_HEADLESS", "1")  # 无人值守：课程函数不画每批一条的进度条
    import course_utils as cu

    device = cu.get_device()
    began = time.perf_counter()
    results = {"command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
               "quick": args.quick, "machine": common.machine_info(device), "sections": [], "targets": []}
    context: dict = {}
    names = list(dict.fromkeys(selected(args.only) + (["course_time"] if args.course else [])))
    for name in names:
        print(f"\n▶ {name} …", flush=True)
        section, targets = run_section(name, device, args.quick, context)
        results["sections"].append(common.section_dict(section))
        results["targets"] += [vars(t) for t in targets]
        print(common.Section(**results["sections"][-1]).to_markdown(), flush=True)
    results["seconds"] = time.perf_counter() - began
    results["machine"]["load_average_at_end"] = common.load_average()
    stem = args.name or common.machine_slug(results["machine"]) + ("-quick" if args.quick else "")
    json_path, md_path = common.write_results(results, args.out, stem)
    print(common.render_markdown(results).split("\n## ")[1] if results["targets"] else "")
    print(f"\n结果已写入 {json_path} 和 {md_path}（用时 {results['seconds'] / 60:.1f} 分钟）")
    return 0


def run_section(name: str, device, quick: bool, context: dict):
    """运行一节，返回 (Section, [Target])；context 在各节之间传递测得的数（如模型每秒图片数）。"""
    import importlib

    module = importlib.import_module(f"benchmarks.{name}")
    monitor = common.CpuMonitor()
    section, targets = module.run(device, quick=quick, context=context)
    section.seconds = time.perf_counter() - monitor.began
    section.other_cpu = monitor.other_share()
    return section, targets


if __name__ == "__main__":
    sys.exit(main())
