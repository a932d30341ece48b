"""``modulemesh infer URL|GRAPH --input NAME=FILE_OR_VALUES``: a small client for a graph.

The target is a router URL (``http://127.0.0.1:8080/v2/models/quickstart``, with or without
``/infer``), a graph file (its ModuleGraph's name, on ``--router``) or a graph name. Values are
comma-separated numbers or a ``.npy`` / ``.json`` file; they are shaped and typed from the
graph's metadata (``[rows, width]``) unless ``--shape``/``--datatype`` say otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure", "run"]


DEFAULT_ROUTER = "http://127.0.0.1:8080"
"""Where ``modulemesh run`` serves by default, so ``infer GRAPH`` reaches it without flags."""


class UsageError(ValueError):
    """Bad arguments; the message says which and why."""


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``infer``'s arguments."""
    parser.add_argument("target", help="router URL, graph YAML file or graph name")
    parser.add_argument("--input", "-i", action="append", default=[], metavar="NAME=FILE_OR_VALUES",
                        help="an input tensor: comma-separated numbers, or a .npy/.json file (repeatable)")  # fmt: skip
    parser.add_argument("--router", default=DEFAULT_ROUTER,
                        help="router base URL when TARGET is a graph file or name")  # fmt: skip
    parser.add_argument(
        "--tags", default=None, help="compliance tags (x-modulemesh-tags), e.g. phi (default: none)"
    )
    parser.add_argument(
        "--priority",
        choices=["critical", "standard", "sheddable"],
        default=None,
        help="x-modulemesh-priority (default: none sent, the router treats it as standard)",
    )
    parser.add_argument("--header", "-H", action="append", default=[], metavar="NAME=VALUE",
                        help="extra request header (repeatable)")  # fmt: skip
    parser.add_argument("--explain", action="store_true", help="print the path the router took")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2",
                        help="shape of an input (default: from metadata)")  # fmt: skip
    parser.add_argument("--datatype", action="append", default=[], metavar="NAME=FP32",
                        help="datatype of an input (default: from metadata)")  # fmt: skip
    parser.add_argument("--binary", action="store_true", help="send inputs with the binary tensor extension")  # fmt: skip
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for the answer"
    )


def _model_url(target: str, router: str) -> str:
    if target.startswith(("http://", "https://")):
        url = target.rstrip("/").removesuffix("/infer")
        if "/v2/models/" not in url:
            raise UsageError(f"{target}: give the graph's URL, e.g. {url}/v2/models/GRAPH")
        return url
    path = Path(target)
    if path.suffix in (".yaml", ".yml", ".json") or path.exists():
        from modulemesh.api.loader import load_files

        docs = load_files([path])
        if docs.issues or len(docs.graphs) != 1:
            problems = "; ".join(str(i) for i in docs.issues) or f"{len(docs.graphs)} ModuleGraphs"
            raise UsageError(f"{target}: need exactly one valid ModuleGraph ({problems})")
        target = docs.graphs[0].metadata.name
    return f"{router.rstrip('/')}/v2/models/{target}"


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise UsageError(f"{what} {item!r} must look like NAME=VALUE")
        out[name] = value
    return out


def _values(spec: str) -> Any:
    import numpy as np

    path = Path(spec)
    if path.suffix in (".npy", ".json"):
        try:
            if path.suffix == ".npy":
                return np.load(path, allow_pickle=False)
            return np.asarray(json.loads(path.read_text()))
        except OSError as exc:
            raise UsageError(f"cannot read {spec}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"{spec} is not a valid {path.suffix} array: {exc}") from None
    try:
        return np.asarray([float(v) for v in spec.split(",") if v.strip()])
    except ValueError:
        raise UsageError(
            f"{spec!r} is neither comma-separated numbers nor a .npy/.json file"
        ) from None


def _dims(name: str, spec: str) -> list[int]:
    try:
        dims = [int(d) for d in spec.split(",")]
    except ValueError:
        dims = []
    if not dims or any(d < 0 for d in dims):
        raise UsageError(f"--shape {name}={spec}: expected comma-separated sizes, e.g. 1,8")
    return dims


def _build_inputs(args: argparse.Namespace, metadata: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from modulemesh import oip

    described = {t["name"]: t for t in metadata.get("inputs", [])}
    shapes = {k: _dims(k, v) for k, v in _pairs(args.shape, "--shape").items()}
    types = _pairs(args.datatype, "--datatype")
    for name, datatype in types.items():
        if datatype not in oip.DATATYPES:
            raise UsageError(
                f"--datatype {name}={datatype}: unknown; expected one of {list(oip.DATATYPES)}"
            )
    given = _pairs(args.input, "--input")
    if not given:
        raise UsageError(
            f"no --input given; the graph takes {sorted(described) or 'unknown inputs'}"
        )
    inputs = {}
    for name, spec in given.items():
        meta = described.get(name, {})
        if described and name not in described:
            raise UsageError(f"the graph has no input {name!r}; it takes {sorted(described)}")
        array = _values(spec)
        datatype = types.get(name) or meta.get("datatype") or "FP32"
        try:
            array = array.astype(oip.dtype_of(datatype))
        except (ValueError, TypeError, oip.ProtocolError) as exc:
            raise UsageError(f"input {name!r}: values are not {datatype}: {exc}") from None
        shape = shapes.get(name)
        if shape is None and array.ndim == 1:
            width = (meta.get("shape") or [-1, -1])[-1]
            if isinstance(width, int) and width > 0:
                if array.size % width:
                    raise UsageError(
                        f"input {name!r}: {array.size} values do not fill rows of {width}"
                    )
                shape = [array.size // width, width]
            else:
                shape = [1, array.size]
        try:
            inputs[name] = array.reshape(shape) if shape is not None else array
        except ValueError:
            raise UsageError(
                f"input {name!r}: {array.size} values do not fit shape {shape}"
            ) from None
    return {k: np.ascontiguousarray(v) for k, v in inputs.items()}


def _json_object(response: Any) -> dict[str, Any]:
    """The metadata document, or ``{}`` when the server sent something else (then the inputs
    must be named in full on the command line)."""
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _unreachable(exc: Exception, url: str, args: argparse.Namespace) -> str:
    """One line naming the address that failed, and where it came from when the user did not
    type it (a graph name or file resolved on the default ``--router``)."""
    import httpx

    try:
        tried = str(exc.request.url) if isinstance(exc, httpx.RequestError) else url
    except RuntimeError:  # an httpx error raised before its request was set
        tried = url
    came_from = ""
    if not args.target.startswith(("http://", "https://")):
        came_from = (
            f" ({args.target!r} on the default --router {DEFAULT_ROUTER}; is `modulemesh run` "
            "serving it, or pass --router URL?)"
            if args.router == DEFAULT_ROUTER
            else f" ({args.target!r} on --router {args.router})"
        )
    return f"cannot reach {tried or args.target}{came_from}: {exc}"


def run(args: argparse.Namespace) -> int:
    """Send one request; print outputs as JSON; exit 1 on an error answer."""
    import httpx

    from modulemesh import headers, oip

    url = ""
    try:
        url = _model_url(args.target, args.router)
        extra = _pairs(args.header, "--header")
        with httpx.Client(timeout=args.timeout) as client:
            meta_response = client.get(url)
            metadata = _json_object(meta_response) if meta_response.status_code == 200 else {}
            inputs = _build_inputs(args, metadata)
            body, length = oip.encode_request(inputs, binary=args.binary)
            request_headers = {"content-type": "application/json", **extra}
            if length is not None:
                request_headers[oip.HEADER_LENGTH] = str(length)
                request_headers["content-type"] = "application/octet-stream"
            if args.tags:
                request_headers[headers.TAGS] = args.tags
            if args.priority:
                request_headers[headers.PRIORITY] = args.priority
            if args.explain:
                request_headers[headers.EXPLAIN] = "1"
            response = client.post(f"{url}/infer", content=body, headers=request_headers)
    except UsageError as exc:
        print(f"modulemesh infer: {exc}", file=sys.stderr)
        return 2
    except (httpx.HTTPError, OSError) as exc:
        print(f"modulemesh infer: {_unreachable(exc, url, args)}", file=sys.stderr)
        return 1
    if response.status_code != 200:
        try:
            error = response.json()
        except ValueError:
            error = {"error": response.text}
        print(json.dumps({"status": response.status_code, **error}, indent=2), file=sys.stderr)
        return 1
    length_header = response.headers.get(oip.HEADER_LENGTH)
    try:
        decoded = oip.decode_response(response.content, length_header)
    except oip.ProtocolError as exc:
        print(f"modulemesh infer: {url}/infer answered 200, but {exc.message}", file=sys.stderr)
        return 1
    out: dict[str, Any] = {
        "model_name": decoded.model_name,
        "outputs": {
            name: {"shape": list(a.shape), "datatype": oip.datatype_of(a), "data": a.tolist()}
            for name, a in decoded.outputs.items()
        },
    }
    if args.explain:
        out["explain"] = decoded.parameters.get("modulemesh_explain")
    print(json.dumps(out, indent=2))
    return 0
