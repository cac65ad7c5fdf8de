"""Where tuning records live and how they are read: the per-target database.

One JSON MetaSchedule database per target hash under the cache (see
:mod:`edgekit.compiler.backends.llvm.tuning`), plus the pre-tuned records shipped in the
wheel per instruction-set class. Its own module because the build
(:func:`edgekit.compiler.backends.llvm.relax_build.build_cpu` reads the shipped records and
compares record times) and tuning (which fills the database and imports the
build's schedules) both need it; in either one it made an import cycle.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.core.cache import cache_root
from edgekit.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "SHIPPED_RECORDS",
    "X86_AVX2",
    "count_records",
    "database_dir",
    "isa_class",
    "open_database",
    "record_seconds",
    "shipped_database",
    "target_hash",
]

#: Folder of pre-tuned records shipped in the wheel, one sub-folder per target hash.
SHIPPED_RECORDS = Path(__file__).resolve().parent.parent / "tuning_records"

_WORKLOAD_FILE = "database_workload.json"
_RECORD_FILE = "database_tuning_record.json"


# --------------------------------------------------------------------------- #
# Where the database lives
# --------------------------------------------------------------------------- #


def _target_json(target: tvm.target.Target) -> str:
    # Canonical JSON of the target without the thread count: records are
    # about the ISA and cache sizes, and a board profile's core count does
    # not change which schedule is best enough to split the database.
    spec = json.loads(str(target))
    spec.pop("num-cores", None)
    return json.dumps(spec, sort_keys=True)


def target_hash(target: tvm.target.Target) -> str:
    """A short, stable hash of the target (kind, triple, CPU, features): names its database folder."""
    return hashlib.sha256(_target_json(target).encode()).hexdigest()[:16]


def database_dir(target: tvm.target.Target, root: str | os.PathLike[str] | None = None) -> Path:
    """The database folder for ``target``: ``<root>/<target-hash>`` (root defaults to the cache's ``tuning/``)."""
    base = Path(root) if root is not None else cache_root() / "tuning"
    return base / target_hash(target)


def open_database(
    target: tvm.target.Target, root: str | os.PathLike[str] | None = None, *, create: bool = True
) -> Any:
    """Opens (creating if needed) the JSON MetaSchedule database of ``target``.

    Args:
        target: The TVM target the records are for.
        root: Folder holding one database per target hash (default: the cache).
        create: Create the folder if it does not exist.

    Raises:
        ConfigError: if the folder cannot be created or the files are corrupt.
    """
    from tvm.s_tir import meta_schedule as ms

    folder = database_dir(target, root)
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
            meta = folder / "target.json"
            if not meta.exists():
                meta.write_text(_target_json(target) + "\n")
        return ms.database.JSONDatabase(
            path_workload=str(folder / _WORKLOAD_FILE),
            path_tuning_record=str(folder / _RECORD_FILE),
            allow_missing=True,
            module_equality="structural",
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot use tuning database folder '{folder}' ({exc.strerror or exc})",
            hint="Set EDGEKIT_CACHE to a writable folder or pass --db DIR.",
        ) from None
    except Exception as exc:  # TVM's parser raises on a truncated/corrupt line
        raise ConfigError(
            f"tuning database '{folder}' is unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})",
            hint="Delete the folder (its records will be re-measured) or pass another --db DIR.",
        ) from None


#: Shipped record sets by instruction-set class (see :func:`isa_class`).
X86_AVX2 = "x86-64-avx2"


def isa_class(target: tvm.target.Target) -> str | None:
    """The shipped-record class of ``target``: ``"x86-64-avx2"`` for x86 CPUs with AVX2 + FMA and no AVX-512.

    Records store schedules (loop structure), not machine code, so records
    measured on one AVX2 CPU apply to every other AVX2 CPU; the kernels are
    still compiled for the exact ``-mcpu``. AVX-512 CPUs use 16-lane tiles,
    so their kernels differ and the AVX2 records do not apply.
    """
    from tvm.target.codegen import target_has_features

    if target.kind.name != "llvm" or "x86" not in str(target.attrs.get("mtriple", "x86_64")):
        return None
    try:
        avx2 = target_has_features("avx2", target) and target_has_features("fma", target)
        avx512 = target_has_features("avx512f", target)
    except Exception:  # a CPU name LLVM does not know
        return None
    return X86_AVX2 if avx2 and not avx512 else None


def shipped_database(target: tvm.target.Target) -> Any | None:
    """The pre-tuned records shipped with edgekit for ``target``'s ISA class, or None if there are none.

    See ``edgekit/tuning_records/README.md`` for how they were measured.
    """
    from tvm.s_tir import meta_schedule as ms

    name = isa_class(target)
    folder = SHIPPED_RECORDS / name if name else None
    if folder is None or not (folder / _RECORD_FILE).is_file():
        return None
    return ms.database.JSONDatabase(
        path_workload=str(folder / _WORKLOAD_FILE),
        path_tuning_record=str(folder / _RECORD_FILE),
        allow_missing=False,
        module_equality="structural",
    )


def count_records(database: Any, mod: tvm.IRModule) -> int:
    """Number of measured records ``database`` holds for the kernel ``mod``."""
    if not database.has_workload(mod):
        return 0
    workload = database.commit_workload(mod)
    return len(database.get_top_k(workload, 1 << 30))


def record_seconds(record: Any) -> float:
    """Mean measured run time of a tuning record, in seconds."""
    secs = [float(s) for s in record.run_secs]
    return sum(secs) / len(secs)
