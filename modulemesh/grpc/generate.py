"""Regenerate ``inference_pb2.py`` / ``.pyi`` from ``inference.proto`` (needs grpcio-tools).

The generated code is checked in so that installing ModuleMesh needs no protobuf compiler; this
script is how it was made: ``python -m modulemesh.grpc.generate``. One edit is made to protoc's
output: the messages are built in a descriptor pool of their own instead of protobuf's default
pool. ``tritonclient.grpc`` and ``kserve`` each register their own copy of the ``inference.*``
messages in the default pool, and two copies of one name there is an error at import, so with
the default pool a process could not hold our codec next to either client.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "inference.proto"
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi")
_DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
_OWN_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate(out: Path) -> None:
    """Run protoc over the proto into ``out`` and move the messages to a pool of their own."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{HERE}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            str(PROTO),
        ],
        check=True,
    )
    code = out / "inference_pb2.py"
    text = code.read_text()
    if _DEFAULT_POOL not in text:
        raise SystemExit(f"protoc's output no longer has {_DEFAULT_POOL!r}: update this script")
    code.write_text(text.replace(_DEFAULT_POOL, _OWN_POOL))


def descriptor_set(out: Path) -> bytes:
    """The proto compiled to a serialized FileDescriptorSet (for the up-to-date check)."""
    target = out / "inference.desc"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}",
         f"--descriptor_set_out={target}", str(PROTO)],
        check=True,
    )  # fmt: skip
    return target.read_bytes()


def main() -> int:
    """Write the generated files next to the proto."""
    argparse.ArgumentParser(description=__doc__).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for name in OUTPUTS:
            (HERE / name).write_text((Path(tmp) / name).read_text())
            print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
