"""The model file: the single contract between training and runtime.

A ``.clipseg`` file is a zip archive (inspect it with ``unzip -l``) holding

- ``meta.json``  – format version, architecture spec, class names, palette, input size,
  mean/std, ignore index, provenance (training recipe, text encoder, metrics), and the sha256
  of every other member;
- ``weights.pt`` – the deploy network's state dict (textual classifier T baked in as a buffer;
  training-only heads removed), loaded with ``torch.load(weights_only=True)``;
- ``model.onnx`` – the same deploy graph for ONNX Runtime (optional), so a robot without PyTorch
  can run the model;
- ``model_int8.onnx`` – optional: the graph statically quantized for CPUs (ONNX Runtime QDQ,
  per-channel int8 weights), added by ``python -m clipseg_ros.quantize``; ``meta.json``'s ``int8``
  entry records how it was made and its own measured val mIoU next to fp32's.

Reading needs only the standard library (plus torch for the PyTorch weights, onnxruntime for
the ONNX graph).  Opening a file checks the ONNX graph against the metadata too: the class count
of its classifier (the Conv whose output the labels' ArgMax reads, found with a small protobuf
reader, so the check needs neither onnx nor onnxruntime) must equal the number of class names.
Writing (``save_model_file``) needs torch (and onnx for the ONNX member).
Every problem raises :class:`ModelFileError` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from .atomic_files import atomic_write
from .conventions import IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD

FORMAT_NAME = "clipseg-model"
FORMAT_VERSION = 1
META_NAME = "meta.json"
WEIGHTS_NAME = "weights.pt"
ONNX_NAME = "model.onnx"
INT8_NAME = "model_int8.onnx"
ONNX_INPUT = "image"
ONNX_OUTPUTS = ("labels", "confidence")
# Floating tensors bigger than this are stored as float16 when ``compact=True``.
COMPACT_MIN_NUMEL = 1024


class ModelFileError(ValueError):
    """A model file that is missing, truncated or inconsistent."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"model file {self.path}: {problem}")


@dataclass
class ModelMeta:
    arch: dict
    class_names: list[str]
    palette: list[list[int]]
    input_size: list[int] | None          # [height, width] the network runs at; None = native
    mean: list[float]
    std: list[float]
    ignore_index: int = IGNORE_INDEX
    provenance: dict = field(default_factory=dict)   # recipe, text encoder, dataset, metrics ...
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    members: dict = field(default_factory=dict)      # member name -> sha256
    int8: dict | None = None                          # the int8 member's record (quantize.py)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> dict:
        return {
            "format": self.format, "format_version": self.format_version, "arch": self.arch,
            "class_names": self.class_names, "palette": self.palette, "input_size": self.input_size,
            "mean": self.mean, "std": self.std, "ignore_index": self.ignore_index,
            "provenance": self.provenance, "members": self.members,
            **({"int8": self.int8} if self.int8 is not None else {}),
        }


def validate_meta(meta: dict, path) -> ModelMeta:
    """Check the metadata for internal consistency; raise ModelFileError naming the problem."""
    def fail(msg):
        raise ModelFileError(path, msg)

    if not isinstance(meta, dict):
        fail("meta.json is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        fail(f"not a {FORMAT_NAME} file (format field is {meta.get('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        fail(f"format_version {version!r} is not supported by this clipseg_ros "
             f"(supports <= {FORMAT_VERSION}); upgrade clipseg_ros")
    for key in ("arch", "class_names", "palette", "mean", "std"):
        if key not in meta:
            fail(f"meta.json lacks the required key {key!r}")
    arch = meta["arch"]
    if not isinstance(arch, dict) or "name" not in arch or "num_classes" not in arch:
        fail("meta.json 'arch' must give at least 'name' and 'num_classes'")
    names = meta["class_names"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        fail("class_names must be a non-empty list of non-empty strings")
    if len(names) != arch["num_classes"]:
        fail(f"metadata lists {len(names)} class names but the network outputs "
             f"{arch['num_classes']} classes")
    if len(names) > 255:
        fail(f"{len(names)} classes do not fit mono8 labels (max 255, 255 = unlabeled)")
    palette = meta["palette"]
    if (not isinstance(palette, list) or len(palette) != len(names)
            or not all(isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c)
                       for c in palette)):
        fail(f"palette must be {len(names)} [r, g, b] triples of integers 0..255 (one per class)")
    for key in ("mean", "std"):
        vals = meta[key]
        if not (isinstance(vals, list) and len(vals) == 3 and all(isinstance(v, (int, float)) for v in vals)):
            fail(f"{key} must be three numbers (RGB), got {vals!r}")
    if any(v <= 0 for v in meta["std"]):
        fail(f"std must be positive, got {meta['std']!r}")
    size = meta.get("input_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2
                                 and all(isinstance(v, int) and 16 <= v <= 8192 for v in size)):
        fail(f"input_size must be null or [height, width] with 16..8192 pixels each, got {size!r}")
    int8 = meta.get("int8")
    if int8 is not None:
        if not isinstance(int8, dict) or int8.get("member") != INT8_NAME:
            fail(f"'int8' must be an object naming its member {INT8_NAME!r}, got {int8!r}")
        for key in ("val_miou", "fp32_val_miou"):
            v = int8.get(key)
            if v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 100):
                fail(f"int8.{key} must be null or a mIoU in 0..100, got {v!r}")
        if INT8_NAME not in (meta.get("members") or {}):
            fail(f"'int8' describes {INT8_NAME} but members does not list it")
    return ModelMeta(
        arch=arch, class_names=list(names), palette=[list(c) for c in palette],
        input_size=list(size) if size else None, mean=[float(v) for v in meta["mean"]],
        std=[float(v) for v in meta["std"]], ignore_index=int(meta.get("ignore_index", IGNORE_INDEX)),
        provenance=dict(meta.get("provenance") or {}), format=meta["format"],
        format_version=version, members=dict(meta.get("members") or {}),
        int8=dict(int8) if int8 is not None else None,
    )


# ---- the ONNX graph's class count -----------------------------------------------------------
# A minimal reader of the protobuf wire format, for the few fields of onnx.proto needed here:
# ModelProto.graph (7); GraphProto.node (1), .initializer (5); NodeProto.input (1), .output (2),
# .op_type (4), .attribute (5); AttributeProto.name (1), .t (5); TensorProto.dims (1), .name (8).

def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or invalid varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _pb_fields(buf: memoryview):
    """(field number, wire type, value) of each field of one message: an int for varints, a
    memoryview for length-delimited and fixed-size fields."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        field_no, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if i > n:
            raise ValueError("truncated protobuf message")
        yield field_no, wire, value


def _tensor_dims(buf: memoryview) -> tuple[str, list[int]]:
    name, dims = "", []
    for f, wire, v in _pb_fields(buf):
        if f == 1 and wire == 0:
            dims.append(v)
        elif f == 1 and wire == 2:          # packed
            j = 0
            while j < len(v):
                d, j = _varint(v, j)
                dims.append(d)
        elif f == 8 and wire == 2:
            name = bytes(v).decode("utf-8", "replace")
    return name, dims


def onnx_num_classes(onnx_bytes: bytes) -> tuple[int, str, list[int]]:
    """The class count of a deploy graph: ``(K, classifier weight name, its shape)``.

    Follows the input of the graph's ArgMax (the labels) back through resizing / casts /
    elementwise ops with a constant operand to the Conv that makes the logits; K is its weight's
    first dimension.  Raises ValueError when the graph cannot be read or has no such classifier.
    """
    graph = None
    for f, wire, v in _pb_fields(memoryview(onnx_bytes)):
        if f == 7 and wire == 2:
            graph = v
    if graph is None:
        raise ValueError("no graph in the ONNX model")
    nodes, shapes = [], {}
    for f, wire, v in _pb_fields(graph):
        if f == 5 and wire == 2:
            name, dims = _tensor_dims(v)
            shapes[name] = dims
        elif f == 1 and wire == 2:
            node = {"input": [], "output": [], "op": "", "attr_tensors": []}
            for nf, nw, nv in _pb_fields(v):
                if nf in (1, 2) and nw == 2:
                    node["input" if nf == 1 else "output"].append(bytes(nv).decode("utf-8", "replace"))
                elif nf == 4 and nw == 2:
                    node["op"] = bytes(nv).decode("utf-8", "replace")
                elif nf == 5 and nw == 2:
                    for af, aw, av in _pb_fields(nv):
                        if af == 5 and aw == 2:
                            node["attr_tensors"].append(_tensor_dims(av)[1])
            nodes.append(node)
    producer = {}
    for node in nodes:
        if node["op"] == "Constant" and node["attr_tensors"]:
            for out in node["output"]:
                shapes.setdefault(out, node["attr_tensors"][0])
        for out in node["output"]:
            producer[out] = node
    argmax = [n for n in nodes if n["op"] == "ArgMax"]
    if len(argmax) != 1:
        raise ValueError(f"expected one ArgMax (the labels) in the ONNX graph, found {len(argmax)}")
    tensor = argmax[0]["input"][0]
    for _ in range(64):
        node = producer.get(tensor)
        if node is None:
            break
        op, inputs = node["op"], node["input"]
        if op == "Conv":
            weight = inputs[1] if len(inputs) > 1 else ""
            # a quantized (QDQ) graph feeds the weight through DequantizeLinear from an int8 constant
            dq = producer.get(weight)
            if weight not in shapes and dq is not None and dq["op"] == "DequantizeLinear":
                weight = dq["input"][0]
            dims = shapes.get(weight)
            if not dims:
                raise ValueError(f"the classifier Conv's weight {weight!r} is not a constant of the graph")
            return int(dims[0]), weight, list(dims)
        if op in ("Resize", "Upsample", "Identity", "Cast", "Softmax", "LogSoftmax", "Relu",
                  "QuantizeLinear", "DequantizeLinear"):
            tensor = inputs[0]
        elif op in ("Add", "Sub", "Mul", "Div") and len(inputs) == 2:
            variable = [t for t in inputs if t not in shapes]
            # a sum of two class maps (LR-ASPP: low + high classifier) has K channels on either side
            if len(variable) == 1 or (op == "Add" and len(variable) == 2):
                tensor = variable[0]
            else:
                break
        else:
            break
    raise ValueError("cannot find the classifier (a Conv feeding the labels' ArgMax) in the ONNX graph")


class ModelFile:
    """A loaded, checked model file.  Members are read once at open time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise ModelFileError(self.path, "does not exist")
        if not self.path.is_file():
            raise ModelFileError(self.path, "is not a regular file")
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = set(zf.namelist())
                if META_NAME not in names:
                    raise ModelFileError(self.path, f"archive has no {META_NAME}; not a clipseg model")
                raw = {name: zf.read(name) for name in (META_NAME, WEIGHTS_NAME, ONNX_NAME, INT8_NAME)
                       if name in names}
        except ModelFileError:
            raise
        except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile) as exc:
            raise ModelFileError(self.path, f"truncated or not a clipseg model archive ({exc})") from exc
        except Exception as exc:  # zlib.error, CRC mismatch (BadZipFile subclasses), ...
            raise ModelFileError(self.path, f"archive is corrupt ({exc})") from exc
        try:
            meta = json.loads(raw[META_NAME].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelFileError(self.path, f"{META_NAME} is not valid JSON ({exc})") from exc
        self.meta = validate_meta(meta, self.path)
        if WEIGHTS_NAME not in raw and ONNX_NAME not in raw:
            raise ModelFileError(self.path, f"contains neither {WEIGHTS_NAME} nor {ONNX_NAME}")
        for name, digest in self.meta.members.items():
            if name not in raw:
                raise ModelFileError(self.path, f"member {name} listed in {META_NAME} is missing")
            if hashlib.sha256(raw[name]).hexdigest() != digest:
                raise ModelFileError(self.path, f"member {name} is corrupt (sha256 mismatch)")
        self._weights = raw.get(WEIGHTS_NAME)
        self.onnx_bytes: bytes | None = raw.get(ONNX_NAME)
        if self.onnx_bytes is not None:
            self._check_onnx_classes()
        self.int8_bytes: bytes | None = None
        if INT8_NAME in raw:
            if INT8_NAME not in self.meta.members or self.meta.int8 is None:
                raise ModelFileError(self.path, f"member {INT8_NAME} is not described in {META_NAME} "
                                     f"(no sha256 in 'members' or no 'int8' entry): refusing an "
                                     f"unverified graph")
            self.int8_bytes = raw[INT8_NAME]
            self._check_onnx_classes(INT8_NAME, self.int8_bytes)

    def _check_onnx_classes(self, member: str = ONNX_NAME, data: bytes | None = None) -> None:
        """The ONNX graph must output as many classes as the metadata names (the PyTorch weights
        are checked against the architecture when they are loaded)."""
        try:
            k, weight, dims = onnx_num_classes(self.onnx_bytes if data is None else data)
        except ValueError as exc:
            raise ModelFileError(self.path, f"{member} cannot be checked against {META_NAME}: {exc}") from None
        want = self.meta.num_classes
        if k != want:
            raise ModelFileError(
                self.path, f"{member} outputs {k} classes (classifier {weight} has shape {dims}) but "
                f"{META_NAME} describes {want} (class_names, palette, "
                f"arch.num_classes={self.meta.arch.get('num_classes')})")

    @property
    def has_torch_weights(self) -> bool:
        return self._weights is not None

    def state_dict(self) -> dict:
        """The deploy network's weights as float32 tensors (needs torch)."""
        import torch

        if self._weights is None:
            raise ModelFileError(self.path, f"has no {WEIGHTS_NAME}; use the onnxruntime backend")
        try:
            state = torch.load(io.BytesIO(self._weights), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelFileError(self.path, f"{WEIGHTS_NAME} cannot be read ({exc})") from exc
        return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}

    def build_network(self):
        """The deploy network (``clipseg_ros.networks``) with the file's weights, in eval mode."""
        from .networks import build_from_spec

        try:
            net = build_from_spec(self.meta.arch)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFileError(self.path, f"architecture {self.meta.arch} cannot be built ({exc})") from exc
        try:
            net.load_state_dict(self.state_dict(), strict=True)
        except RuntimeError as exc:
            raise ModelFileError(self.path, f"weights do not match the architecture {self.meta.arch}: "
                                 f"{str(exc).splitlines()[0]} ...") from exc
        return net.eval()


def deploy_network(network):
    """A copy of ``network`` without training-only heads, in eval mode (same weights).

    The network says what is training-only (``deploy_spec`` / ``network.deploy_state_dict()``)."""
    from .networks import build_from_spec, deploy_spec

    deploy = build_from_spec(deploy_spec(network))
    deploy.load_state_dict(network.deploy_state_dict(), strict=True)
    return deploy.eval()


def save_model_file(path, network, class_names, *, palette=None, input_size=None,
                    mean=IMAGENET_MEAN, std=IMAGENET_STD,
                    provenance: dict | None = None, onnx: bool = True, compact: bool = True,
                    opset: int = 17) -> ModelMeta:
    """Export ``network`` (a ``ContextPathSegmenter``, guided or not) to a model file.

    The text classifier must already be baked into ``network.text_guidance`` (``set_text_embeddings``).
    ``compact`` stores large floating tensors as float16; the PyTorch weights and the ONNX graph
    are both made from the same rounded values, so the two backends agree.  The write is atomic.
    Returns the metadata written.
    """
    import torch

    from .networks import DeployWrapper, arch_spec

    deploy = deploy_network(network)
    state = deploy.state_dict()
    if compact:
        state = {k: (v.half() if v.is_floating_point() and v.numel() >= COMPACT_MIN_NUMEL else v)
                 for k, v in state.items()}
        deploy.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    if palette is None:
        from .visualize import default_palette

        palette = default_palette(len(class_names))
    meta = ModelMeta(
        arch=arch_spec(deploy), class_names=list(class_names),
        palette=[[int(v) for v in c] for c in palette],
        input_size=[int(v) for v in input_size] if input_size else None,
        mean=[float(v) for v in mean], std=[float(v) for v in std],
        provenance=dict(provenance or {}),
    )
    meta.provenance.setdefault("weights_dtype", "float16" if compact else "float32")
    validate_meta(json.loads(json.dumps(meta.to_json())), path)

    members: dict[str, bytes] = {}
    buf = io.BytesIO()
    torch.save(state, buf)
    members[WEIGHTS_NAME] = buf.getvalue()
    if onnx:
        members[ONNX_NAME] = export_onnx_bytes(DeployWrapper(deploy, mean, std).eval(),
                                               input_size or (256, 256), opset)
    meta.members = {name: hashlib.sha256(data).hexdigest() for name, data in members.items()}
    members = {META_NAME: json.dumps(meta.to_json(), indent=2).encode("utf-8"), **members}
    atomic_write_zip(path, members)
    return meta


def export_onnx_bytes(wrapper, sample_hw, opset: int = 17) -> bytes:
    """ONNX graph of a DeployWrapper with dynamic batch, height and width."""
    import torch

    sample = torch.zeros((1, int(sample_hw[0]), int(sample_hw[1]), 3), dtype=torch.uint8)
    dyn = {0: "batch", 1: "height", 2: "width"}
    buf = io.BytesIO()
    import warnings

    # The TorchScript-based exporter handles the dynamic-size deploy graph in well under a second;
    # silence its deprecation notices.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, (sample,), buf, input_names=[ONNX_INPUT], output_names=list(ONNX_OUTPUTS),
            dynamic_axes={ONNX_INPUT: dyn, ONNX_OUTPUTS[0]: dyn, ONNX_OUTPUTS[1]: dyn},
            opset_version=opset, dynamo=False, do_constant_folding=True)
    return buf.getvalue()


def atomic_write_zip(path, members: dict[str, bytes]) -> None:
    """Write a zip archive next to ``path`` and rename it into place (no half-written files).
    The file gets the mode open() would give it (a model file is read by other users: a package
    install, a robot's service account), not mkstemp's 0600."""
    def write(fh):
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)

    atomic_write(path, write, make_dirs=True)
