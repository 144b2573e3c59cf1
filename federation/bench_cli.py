"""``signpost bench ...`` and ``signpost eval-matching``: the numbers, printed (never asserted)."""

from __future__ import annotations

import argparse


def cmd_bench_audit(args: argparse.Namespace) -> int:
    from trust import logbench

    logbench.run(args.entries, appends=args.appends, appenders=args.appenders, proofs=args.proofs,
                 directory=args.dir)
    return 0


def cmd_bench_matching(args: argparse.Namespace) -> int:
    from node.matchbench import bench_matching

    bench_matching(args.children, args.queries, seed=args.seed)
    return 0


def cmd_bench_trust(args: argparse.Namespace) -> int:
    from trust import bench

    bench.main()
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    from federation import searchbench

    result = searchbench.run(children=args.children, searches=args.searches, concurrency=args.concurrency)
    return 1 if result["failures"] else 0


def cmd_eval_matching(args: argparse.Namespace) -> int:
    from node.evaluation import eval_matching, list_datasets

    datasets = list_datasets() if args.dataset == "all" else (args.dataset,)
    for dataset in datasets:
        for with_identifier in ((False, True) if args.both else (args.with_identifier,)):
            for open_set in ((False, True) if args.both else (args.open_set,)):
                eval_matching(dataset, with_identifier=with_identifier, open_set=open_set,
                              sample=args.sample, seed=args.seed)
                print()
    return 0
