"""Run AOT C output on the build machine, to check its numerics against onnxruntime.

The same emitter output (``model.c`` + ``kernels.o`` built for the host
triple) is linked with a small C driver that loads ``weights.bin`` into an
aligned buffer, copies each input into ``ek_arena`` at its planned offset,
calls ``ek_model_run`` and writes each output back. Only the kernel triple
differs from the device build.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgekit.compiler.firmware import compile_c, find_toolchain, link_image
from edgekit.core.errors import CompileError
from edgekit.core.tensors import TensorSpec

__all__ = ["HOST_DRIVER_C", "run_on_host", "RUN_TIMEOUT_S"]

logger = logging.getLogger(__name__)

#: Limit for one run of the host driver.
RUN_TIMEOUT_S = 120

HOST_DRIVER_C = r"""/* Host driver for a generated model: driver WEIGHTS IN... OUT... */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

static int read_file(const char *path, uint8_t *dst, uint32_t n) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t got = fread(dst, 1, n, f);
  fclose(f);
  return got == n ? 0 : -1;
}

int main(int argc, char **argv) {
  uint32_t i, nw = ek_model_info.weight_bytes;
  uint8_t *weights;
  int32_t rc;
  if (argc != 2 + (int)(ek_model_info.num_inputs + ek_model_info.num_outputs)) {
    fprintf(stderr, "usage: driver WEIGHTS IN... OUT...\n");
    return 2;
  }
  weights = aligned_alloc(EK_MODEL_ALIGNMENT, nw ? (nw + EK_MODEL_ALIGNMENT - 1u) / EK_MODEL_ALIGNMENT * EK_MODEL_ALIGNMENT : EK_MODEL_ALIGNMENT);
  if (!weights || (nw && read_file(argv[1], weights, nw))) { fprintf(stderr, "cannot read %s\n", argv[1]); return 3; }
  for (i = 0; i < ek_model_info.num_inputs; ++i)
    if (read_file(argv[2 + i], ek_arena + ek_model_info.input_offsets[i], ek_model_info.input_bytes[i])) {
      fprintf(stderr, "cannot read %s\n", argv[2 + i]);
      return 3;
    }
  rc = ek_model_run(weights);
  if (rc != 0) { fprintf(stderr, "ek_model_run returned %d\n", (int)rc); return 4; }
  for (i = 0; i < ek_model_info.num_outputs; ++i) {
    FILE *f = fopen(argv[2 + ek_model_info.num_inputs + i], "wb");
    if (!f || fwrite(ek_arena + ek_model_info.output_offsets[i], 1, ek_model_info.output_bytes[i], f) != ek_model_info.output_bytes[i]) return 5;
    fclose(f);
  }
  free(weights);
  return 0;
}
"""


def run_on_host(
    members: Mapping[str, bytes],
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    feeds: Mapping[str, np.ndarray],
    *,
    workdir: Path | None = None,
) -> list[np.ndarray]:
    """Builds the host driver around ``members`` and runs one inference.

    Args:
        members: ``model/model.c``, ``model/model.h``, ``model/kernels.o``
            (built for the host triple) and ``weights.bin``.
        inputs: Input specs, in model order.
        outputs: Output specs, in model order.
        feeds: Input name -> array.
        workdir: Where to build (a temporary folder if None).

    Returns:
        The outputs, in model order.

    Raises:
        CompileError: if the driver does not build or the run fails.
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-aot-host-") as tmp:
        root = Path(workdir or tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in ("model/model.c", "model/model.h", "model/kernels.o"):
            (root / Path(name).name).write_bytes(members[name])
        (root / "weights.bin").write_bytes(members["weights.bin"])
        (root / "driver.c").write_text(HOST_DRIVER_C, encoding="utf-8")
        toolchain = find_toolchain(cross=False)
        objects = compile_c(toolchain, [root / "model.c", root / "driver.c"], root / "obj", ["-fPIC"], [root])
        exe = link_image(
            toolchain, [*objects, root / "kernels.o"], root / "driver", ["-lm"], freestanding=False
        )
        args = [str(exe), str(root / "weights.bin")]
        for i, spec in enumerate(inputs):
            path = root / f"in{i}.bin"
            path.write_bytes(np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype).tobytes())
            args.append(str(path))
        out_paths = [root / f"out{i}.bin" for i in range(len(outputs))]
        args += [str(p) for p in out_paths]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
        if proc.returncode != 0:
            raise CompileError(
                f"the host build of the AOT model failed to run (exit {proc.returncode}): {proc.stderr.strip()[:300]}",
                hint="Report the model; the generated C or a kernel is wrong.",
            )
        return [
            np.frombuffer(p.read_bytes(), dtype=spec.dtype).reshape(spec.shape).copy()
            for p, spec in zip(out_paths, outputs)
        ]
