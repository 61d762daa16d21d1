"""llama-cpp-python's server with the weights laid out as ours are: `python -m
gpt4all_api.bench.llama_cpp_server --no-repack ARGS` runs `python -m llama_cpp.server ARGS`
with llama.cpp's extra CPU buffer types off (`use_extra_bufts`), which llama-cpp-python has
no setting for. The bench uses it where our `repack=auto` turns repacking off (a llama.cpp
build with AMX kernels, `devices.repack_by_default`), so that both servers run the same kernels
and neither crashes."""

from __future__ import annotations

import runpy
import sys

import llama_cpp.llama_cpp as lc


def main() -> None:
    args = sys.argv[1:]
    if args and args[0] == "--no-repack":
        args = args[1:]
        default = lc.llama_model_default_params

        def no_repack() -> lc.llama_model_params:
            params = default()
            params.use_extra_bufts = False
            return params

        lc.llama_model_default_params = no_repack
    sys.argv = ["llama_cpp.server", *args]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
