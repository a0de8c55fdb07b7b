"""Command-line entry point: ``lysep <command> ...`` (also ``python -m lysep ...``).

Each command is one ``_add_<command>(subparsers)`` function that declares its arguments
and sets ``func`` to a handler ``(args) -> exit code``; add a command by writing such a
pair and listing it in ``COMMANDS``.
"""
import argparse
import signal
import sys


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_reproduce(subparsers):
    p = subparsers.add_parser(
        "reproduce", help="run one of the paper's experiments (MATH.md §8)",
        description="Train LySep and gradient descent over the experiment's grid "
                    "(architectures x seeds; interface: x four time slices), tune GD's "
                    "learning rate once, and write the table (Markdown, CSV), figures and "
                    "one JSON record per run to the output folder.  Finished runs are "
                    "skipped, so an interrupted grid resumes where it stopped.")
    p.add_argument("experiment", choices=("circle", "interface", "cnn"))
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", choices=("fashion-mnist",), default=None,
                      help="cnn: the data set (default fashion-mnist, from the Debian "
                           "package dataset-fashion-mnist)")
    data.add_argument("--data-dir", metavar="DIR",
                      help="cnn: a folder with the four MNIST-format (IDX) files instead")
    p.add_argument("--quick", action="store_true",
                   help="reduced grid (2 seeds, 2 architectures, short budgets): under two "
                        "minutes; default output results/<experiment>-quick")
    p.add_argument("--seeds", type=_positive_int, metavar="N",
                   help="number of seeds (0..N-1); default 10, or 2 with --quick")
    p.add_argument("--jobs", type=_positive_int, metavar="N",
                   help="parallel worker processes, one BLAS thread each (default: cores)")
    p.add_argument("--out", metavar="DIR", help="output folder (default results/<experiment>)")
    p.add_argument("--table-only", action="store_true",
                   help="rebuild table and figures from the run records, train nothing")
    p.add_argument("--no-figures", action="store_true", help="skip the figures")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args):
    from .experiments import reproduce
    if args.experiment != "cnn" and (args.data or args.data_dir):
        print("lysep: error: --data and --data-dir are for the cnn experiment", file=sys.stderr)
        return 2
    return reproduce(args.experiment, out=args.out, n_jobs=args.jobs, n_seeds=args.seeds,
                     quick=args.quick, table_only=args.table_only,
                     figures=not args.no_figures, data=args.data_dir or args.data)


def _add_demo(subparsers):
    p = subparsers.add_parser(
        "demo", help="LySep vs gradient descent on the deep circle problem, side by side",
        description="Train LySep (300 sweeps) and gradient descent (3000 iterations at the "
                    "rate tuned by `lysep reproduce circle`) on the circle problem with 19 "
                    "hidden tanh layers of width 20 (3000 samples, seed 0) and print final "
                    "training CE, training and test accuracy and wall time of both.")
    p.add_argument("--quick", action="store_true", help="30 sweeps and 300 GD iterations")
    p.add_argument("--jobs", type=_positive_int, metavar="N",
                   help="1 trains the two models one after the other (default: in parallel)")
    p.set_defaults(func=_run_demo)


def _run_demo(args):
    from .experiments import demo
    return demo(quick=args.quick, n_jobs=args.jobs)


def _add_model_commands(subparsers):
    from ._cli_model import add_commands
    add_commands(subparsers)           # train, predict, info


COMMANDS = (_add_reproduce, _add_demo, _add_model_commands)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="lysep", description="Layer separation (LySep) training of softmax classifiers.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"lysep {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for add in COMMANDS:
        add(subparsers)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt        # stop like Ctrl-C: workers stopped, records kept


def main(argv=None):
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished runs are recorded, rerun the same command to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
