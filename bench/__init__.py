"""lysep benchmark suite: ``python -m bench [--quick] [--out DIR]`` (see ``bench/__main__.py``).

Every comparison (compiled vs NumPy reference, lysep vs PyTorch, float32 vs float64) is
measured in one process, interleaved round by round, and reported as the median of the
per-round ratios: only ratios are meant to be compared across machines.

Importing this package moves the source tree's root to the end of ``sys.path`` when its
``lysep/`` folder has no compiled modules, so that ``python -m bench`` run from a checkout
benchmarks the *installed* package (the source folder cannot run).
"""
import glob
import os
import sys


def _prefer_installed_lysep():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(root, "lysep")
    compiled = glob.glob(os.path.join(source, "_fnn_blocks*.so")) + \
        glob.glob(os.path.join(source, "_fnn_blocks*.pyd"))
    if not os.path.isdir(source) or compiled:
        return
    moved = [p for p in sys.path if os.path.abspath(p or os.getcwd()) == root]
    if moved:
        sys.path[:] = [p for p in sys.path if p not in moved] + moved


_prefer_installed_lysep()
