"""Training and inference images/s per model and execution mode, beside the machine's matmul peak.

    python benchmarks/throughput.py                      # the default models and modes (several minutes)
    python benchmarks/throughput.py --modes fp32 compiled --models resnet20
    python benchmarks/throughput.py --smoke              # seconds: checks that everything runs

Same as `resnets bench`; see resnets/bench.py for what is measured.
"""

import sys

from resnets.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
