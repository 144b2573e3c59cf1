"""``signpost bench ...`` and ``signpost eval-matching``: the numbers, printed (never asserted)."""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

from federation.tools import channelbench, fedbench, fuzzbench, logbench, nodebench, searchbench, soak
from federation.tools import trustbench as bench
from federation.tools.evaluation import eval_matching, list_datasets
from federation.tools.matchbench import bench_matching


def cmd_bench_audit(args: argparse.Namespace) -> int:
    logbench.run(args.entries, appends=args.appends, appenders=args.appenders, proofs=args.proofs,
                 directory=args.dir)
    return 0


def cmd_bench_fuzz(args: argparse.Namespace) -> int:
    tallies = fuzzbench.run(args.inputs, seed=args.seed)
    return 1 if any(t.crashes for t in tallies) else 0


def cmd_bench_soak(args: argparse.Namespace) -> int:
    # With --json the figures go to stdout as one document and the progress lines to stderr.
    result = soak.run(minutes=args.minutes, rate=args.rate, children=args.children,
                      out=(lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0 if not result["errors"] and result["verified"] and not result["discrepancies"] else 1


def cmd_bench_matching(args: argparse.Namespace) -> int:
    report = bench_matching(args.children, args.queries, seed=args.seed,
                            out=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_bench_trust(args: argparse.Namespace) -> int:
    bench.main()
    return 0


def cmd_bench_node(args: argparse.Namespace) -> int:
    result = nodebench.run(args.children, queries=args.queries,
                           source=Path(args.baseline_source) if args.baseline_source else None,
                           out=functools.partial(print, file=sys.stderr, flush=True) if args.json else print)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def cmd_bench_search(args: argparse.Namespace) -> int:
    result = searchbench.run(children=args.children, searches=args.searches, concurrency=args.concurrency)
    return 1 if result["failures"] else 0


def cmd_bench_federation(args: argparse.Namespace) -> int:
    quiet = args.json
    report = fedbench.run(nodes=args.nodes, children=args.children_per_node, concurrency=args.concurrency,
                          searches=args.searches, idle=args.idle, central=not args.no_central, http=args.http,
                          seconds=args.seconds, redis=args.redis, folder=Path(args.dir) if args.dir else None,
                          baseline_source=Path(args.baseline_source) if args.baseline_source else None,
                          out=(lambda _: None) if quiet else print)
    print(json.dumps(report, indent=2) if quiet else fedbench.render(report))
    return 0


def cmd_bench_channel(args: argparse.Namespace) -> int:
    report = channelbench.run(nodes=args.nodes, fanouts=args.fanouts, servers=args.servers,
                              spread_ms=args.spread_ms, hold_ms=args.hold_ms,
                              out=(lambda _: None) if args.json else print)
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_eval_matching(args: argparse.Namespace) -> int:
    datasets = list_datasets() if args.dataset == "all" else (args.dataset,)
    for dataset in datasets:
        for with_identifier in ((False, True) if args.both else (args.with_identifier,)):
            for open_set in ((False, True) if args.both else (args.open_set,)):
                eval_matching(dataset, with_identifier=with_identifier, open_set=open_set,
                              sample=args.sample, seed=args.seed)
                print()
    return 0
