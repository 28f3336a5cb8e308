"""Draw metric against speedup for a results file of pruning runs, with their Pareto frontier.

    python analysis/plot_frontier.py RESULTS.jsonl -o frontier.png [--title TITLE]

The results file holds one JSON object per run (format: analysis/README.md).
"""

from __future__ import annotations

import argparse

from nn_prune_ext.plots import load_runs, pareto_frontier, plot_frontier


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="JSON-lines results file, one run per line")
    parser.add_argument("-o", "--output", default="frontier.png", help="PNG to write (default: frontier.png)")
    parser.add_argument("--title", help="figure title (default: '<metric> vs speedup')")
    args = parser.parse_args(argv)
    runs = load_runs(args.results)
    path = plot_frontier(runs, args.output, title=args.title)
    frontier = pareto_frontier(runs)
    print("Pareto frontier: " + ", ".join(f"{run.name} ({run.speedup:.2f}x, {run.value:.4g})" for run in frontier))
    print(f"written {path}")


if __name__ == "__main__":
    main()
