"""The paper's experiments (Tables 1-5 and N2N vs random search) at CPU scale on MNIST-10k.

Each module is one command (see docs/results.md); results go to benchmarks/paper/results/.
"""
