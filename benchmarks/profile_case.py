"""Profile one case of the suite, to see where its time goes (BENCHMARKS.md quotes these).

PyTorch-based implementations get ``torch.profiler``'s operator table (where the kernels
spend their time); every implementation gets ``cProfile``'s top functions (where Python
spends it: validation, dispatch, tracing).

    python -m benchmarks.profile_case FeatureMixing torch inference eager small
    python -m benchmarks.profile_case FeatureMixing keras-jax train-step compiled large
"""

from __future__ import annotations

import argparse
import cProfile
import pstats

from .table import LAYERS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layer", choices=list(LAYERS))
    parser.add_argument("impl")
    parser.add_argument("mode")
    parser.add_argument("execution")
    parser.add_argument("size")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)

    bench = LAYERS[args.layer]()
    bench.setup(args.impl, args.mode, args.execution, args.size, "cpu")
    run = bench.case.run
    run()

    if "torch" in args.impl or args.impl == "neuralforecast":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.calls):
                run()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))

    profiler = cProfile.Profile()
    profiler.runcall(lambda: [run() for _ in range(args.calls)])
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
