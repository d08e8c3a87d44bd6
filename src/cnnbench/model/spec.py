"""Model specs as data: parse, validate, infer shapes, count parameters and FLOPs.

A spec is a YAML file with Keras layer names and arguments::

    name: tiny
    input_shape: [28, 28, 1]
    layers:
      - Conv2D: {filters: 8, kernel_size: 3, activation: relu}
      - MaxPooling2D: {}
      - Flatten: {}
      - Dense: {units: 10, activation: softmax}

Shapes are Keras' (height, width, channels). Nothing here imports torch, so listing and
summarising models stays instant.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnbench.errors import UsageError

ACTIVATIONS = (
    "relu", "sigmoid", "tanh", "elu", "selu", "softmax", "linear", "gelu", "leaky_relu",
)
PADDINGS = ("valid", "same")


class SpecError(UsageError, ValueError):
    """A spec that cannot be built; the message says where and why."""


# A model's name becomes file names (its plot, an imported spec) and keys results: letters,
# digits and ``_ . - [ ] = ,`` (an ablation's ``CNN_MNIST_2[activation=relu,norm=none]``), no
# path separator, not starting with '.' or '-' (no '..', no hidden file, no option look-alike).
NAME_RULE = r"[A-Za-z0-9_][A-Za-z0-9_.,=\[\]-]{0,99}"
NAME_RULE_TEXT = ("1 to 100 of the characters A-Z a-z 0-9 _ . - [ ] = , "
                  "(not starting with '.' or '-')")
_NAME = re.compile(NAME_RULE)
MAX_DESCRIPTION = 10_000  # characters; a description is prose, not data
MAX_SPEC_BYTES = 1 << 20  # a spec or study file of over 1 MiB is not one a person wrote


def check_name(name: Any, where: str, what: str = "name") -> str:
    """A model (or study) name that is safe as a file name; SpecError saying the rule."""
    if not isinstance(name, str):
        raise SpecError(f"{where}: '{what}' must be a string. Got {name!r}.")
    if not _NAME.fullmatch(name):
        shown = name if len(name) <= 120 else name[:120] + "..."
        raise SpecError(f"{where}: '{what}' {shown!r} is not allowed: a name is {NAME_RULE_TEXT}; "
                        f"it becomes file names.")
    return name


def check_description(value: Any, where: str) -> None:
    """A description is an optional string of bounded length."""
    if value is not None and not (isinstance(value, str) and len(value) <= MAX_DESCRIPTION):
        got = f"{len(value):,} characters" if isinstance(value, str) else type(value).__name__
        raise SpecError(f"{where}: 'description' must be a string of at most "
                        f"{MAX_DESCRIPTION:,} characters. Got {got}.")


# --- argument constraints: one checker per kind, one message template for all -------------

def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _pair(v: Any) -> bool:
    if _positive_int(v):
        return True
    return isinstance(v, list | tuple) and len(v) == 2 and all(_positive_int(x) for x in v)


def _optional_pair(v: Any) -> bool:
    return v is None or _pair(v)


def _rate(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


def _one_of(options: tuple[str, ...]) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return v in options
    check.__doc__ = "one of " + ", ".join(repr(o) for o in options)
    return check


_DESCRIBE = {
    _positive_int: "a positive integer",
    _pair: "a positive integer or a list of two",
    _optional_pair: "null, a positive integer or a list of two",
    _rate: "a number in [0, 1)",
    _bool: "true or false",
}


def _describe(check: Callable[[Any], bool]) -> str:
    return _DESCRIBE.get(check) or check.__doc__ or check.__name__


_activation = _one_of(ACTIVATIONS)
_padding = _one_of(PADDINGS)

# kind -> {argument: (constraint, default)}; a default of ... means required.
LAYERS: dict[str, dict[str, tuple[Callable[[Any], bool], Any]]] = {
    "Conv2D": {
        "filters": (_positive_int, ...),
        "kernel_size": (_pair, ...),
        "strides": (_pair, 1),
        "padding": (_padding, "valid"),
        "activation": (_activation, "linear"),
        "use_bias": (_bool, True),
    },
    "MaxPooling2D": {
        "pool_size": (_pair, 2),
        "strides": (_optional_pair, None),
        "padding": (_padding, "valid"),
    },
    "AveragePooling2D": {
        "pool_size": (_pair, 2),
        "strides": (_optional_pair, None),
        "padding": (_padding, "valid"),
    },
    "BatchNormalization": {},
    "Dropout": {"rate": (_rate, ...)},
    "Flatten": {},
    "GlobalAveragePooling2D": {},
    "Dense": {
        "units": (_positive_int, ...),
        "activation": (_activation, "linear"),
        "use_bias": (_bool, True),
    },
    "Activation": {"activation": (_activation, ...)},
}


@dataclass(frozen=True)
class Layer:
    """One validated layer with its inferred shapes and costs."""

    index: int  # 1-based, as a person counts the lines of the spec
    kind: str
    args: dict[str, Any]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    trainable_params: int
    non_trainable_params: int
    macs: int  # multiply-accumulates per image, forward

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    def label(self) -> str:
        """Short description, e.g. ``Conv2D 32 5x5 same relu``."""
        a = self.args
        if self.kind == "Conv2D":
            kh, kw = a["kernel_size"]
            bias = "" if a["use_bias"] else " no-bias"
            return f"Conv2D {a['filters']} {kh}x{kw} {a['padding']} {a['activation']}{bias}"
        if self.kind in ("MaxPooling2D", "AveragePooling2D"):
            ph, pw = a["pool_size"]
            return f"{self.kind} {ph}x{pw} {a['padding']}"
        if self.kind == "Dense":
            return f"Dense {a['units']} {a['activation']}"
        if self.kind == "Dropout":
            return f"Dropout {a['rate']:g}"
        if self.kind == "Activation":
            return f"Activation {a['activation']}"
        return self.kind

    def shorthand(self) -> str:
        """The notebook's shorthand, e.g. ``Conv2D(32,5x5)`` or ``Dropout(0.5)``."""
        a = self.args
        if self.kind == "Conv2D":
            kh, kw = a["kernel_size"]
            return f"Conv2D({a['filters']},{kh}x{kw})"
        if self.kind == "Dense":
            return f"Dense({a['units']})"
        if self.kind == "Dropout":
            return f"Dropout({a['rate']:g})"
        if self.kind == "MaxPooling2D":
            return "MaxPool"
        if self.kind == "AveragePooling2D":
            return "AvgPool"
        if self.kind == "BatchNormalization":
            return "BatchNorm"
        if self.kind == "Activation":
            return a["activation"]
        return self.kind


@dataclass(frozen=True)
class ModelSpec:
    """A validated model: its layers with shapes, parameters and FLOPs."""

    name: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]
    source: str = "<memory>"
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The name its runs are keyed under when not its own: a variant's base model (variants.py),
    # so the same layers and settings are one run whatever the variant is called.
    run_name: str | None = field(default=None, compare=False)

    @property
    def trainable_params(self) -> int:
        return sum(layer.trainable_params for layer in self.layers)

    @property
    def non_trainable_params(self) -> int:
        return sum(layer.non_trainable_params for layer in self.layers)

    @property
    def params(self) -> int:
        return self.trainable_params + self.non_trainable_params

    @property
    def macs(self) -> int:
        """Multiply-accumulates per image, forward."""
        return sum(layer.macs for layer in self.layers)

    @property
    def train_flops_per_image(self) -> int:
        """Training FLOPs per image: 2 FLOPs a MAC, backward about twice the forward."""
        return 6 * self.macs

    @property
    def num_classes(self) -> int:
        return self.layers[-1].output_shape[-1]

    @property
    def uses_batchnorm(self) -> bool:
        return any(layer.kind == "BatchNormalization" for layer in self.layers)

    @property
    def dropout_rates(self) -> list[float]:
        return [float(layer.args["rate"]) for layer in self.layers if layer.kind == "Dropout"]

    def shorthand(self) -> str:
        return " + ".join(layer.shorthand() for layer in self.layers)


# --- parsing ------------------------------------------------------------------------------

def _layer_entry(entry: Any, where: str) -> tuple[str, dict[str, Any]]:
    """Accepts ``- Flatten``, ``- Flatten: {}`` and ``- Conv2D: {filters: 8, ...}``."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, dict) and len(entry) == 1:
        kind, args = next(iter(entry.items()))
        if args is None:
            args = {}
        if not isinstance(args, dict):
            raise SpecError(f"{where}: the arguments of {kind} must be a mapping. Got {args!r}.")
        return str(kind), dict(args)
    if isinstance(entry, dict) and entry and next(iter(entry.values())) is None:
        kind = next(iter(entry))
        others = ", ".join(str(k) for k in list(entry)[1:])
        raise SpecError(f"{where} ({kind}): its arguments ({others}) are not indented under "
                        f"'{kind}:'; indent them further, or write "
                        f"'- {kind}: {{argument: value, ...}}' on one line.")
    raise SpecError(
        f"{where}: a layer must be written as 'Kind: {{argument: value, ...}}'. Got {entry!r}."
    )


def _resolve_args(kind: str, args: dict[str, Any], where: str) -> dict[str, Any]:
    if kind not in LAYERS:
        close = difflib.get_close_matches(kind, LAYERS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(
            f"{where}: unknown layer '{kind}'.{hint} Known layers: {', '.join(LAYERS)}."
        )
    known = LAYERS[kind]
    for name in args:
        if name not in known:
            listed = ", ".join(known) if known else "none"
            raise SpecError(
                f"{where}: {kind} has no argument '{name}'. Its arguments: {listed}."
            )
    resolved: dict[str, Any] = {}
    for name, (check, default) in known.items():
        if name not in args:
            if default is ...:
                raise SpecError(f"{where}: {kind} needs the argument '{name}' "
                                f"({_describe(check)}).")
            resolved[name] = default
            continue
        value = args[name]
        if not check(value):
            raise SpecError(f"{where}: the '{name}' of {kind} must be {_describe(check)}. "
                            f"Got {value!r}.")
        resolved[name] = value
    for name in ("kernel_size", "strides", "pool_size"):
        if name in resolved and resolved[name] is not None:
            v = resolved[name]
            resolved[name] = (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))
    if kind in ("MaxPooling2D", "AveragePooling2D") and resolved["strides"] is None:
        resolved["strides"] = resolved["pool_size"]  # Keras: strides default to pool_size
    return resolved


def _window_out(size: int, k: int, s: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / s)
    return (size - k) // s + 1


def _infer(kind: str, a: dict[str, Any], shape: tuple[int, ...], where: str,
           desc: str) -> tuple[tuple[int, ...], int, int, int]:
    """Output shape, trainable params, non-trainable params, MACs of one layer."""
    spatial = kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D", "BatchNormalization",
                       "GlobalAveragePooling2D", "Flatten")
    if spatial and kind != "BatchNormalization" and len(shape) != 3:
        raise SpecError(f"{where} ({desc}) needs an image input (height, width, channels); "
                        f"it gets {shape}. Remove the Flatten/Dense before it.")
    if kind == "Dense" and len(shape) != 1:
        raise SpecError(f"{where} ({desc}) gets a {'x'.join(map(str, shape))} input; "
                        f"add Flatten or GlobalAveragePooling2D before it.")
    if kind in ("Conv2D", "MaxPooling2D", "AveragePooling2D"):
        h, w, c = shape
        kh, kw = a["kernel_size"] if kind == "Conv2D" else a["pool_size"]
        sh, sw = a["strides"]
        oh = _window_out(h, kh, sh, a["padding"])
        ow = _window_out(w, kw, sw, a["padding"])
        if oh < 1 or ow < 1:
            raise SpecError(f"{where} ({desc}) gets a {h}x{w} input; "
                            f"its output would be {max(oh, 0)}x{max(ow, 0)}.")
        if kind != "Conv2D":
            return (oh, ow, c), 0, 0, 0
        f = a["filters"]
        weights = kh * kw * c * f
        return (oh, ow, f), weights + (f if a["use_bias"] else 0), 0, oh * ow * weights
    if kind == "BatchNormalization":
        c = shape[-1]
        return shape, 2 * c, 2 * c, 0  # gamma, beta trainable; moving mean, variance not
    if kind == "Flatten":
        return (math.prod(shape),), 0, 0, 0
    if kind == "GlobalAveragePooling2D":
        return (shape[-1],), 0, 0, 0
    if kind == "Dense":
        n_in, units = shape[0], a["units"]
        return (units,), n_in * units + (units if a["use_bias"] else 0), 0, n_in * units
    return shape, 0, 0, 0  # Dropout, Activation


def build_spec(data: Any, source: str = "<memory>") -> ModelSpec:
    """Validate a parsed spec (a dict) and infer every layer's shape.

    >>> s = build_spec({"name": "t", "input_shape": [28, 28, 1], "layers": [
    ...     {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]})
    >>> s.params
    7850
    """
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a model spec must be a mapping with 'name', 'input_shape' "
                        f"and 'layers'. Got {type(data).__name__}.")
    unknown = set(data) - {"name", "input_shape", "layers", "description"}
    if unknown:
        raise SpecError(f"{source}: unknown field(s) {sorted(unknown)}; a model spec has "
                        f"'name', 'input_shape', 'layers' and optionally 'description'.")
    name = check_name(data.get("name") or Path(source).stem, source)
    check_description(data.get("description"), source)
    input_shape = data.get("input_shape", [28, 28, 1])
    if not (isinstance(input_shape, list | tuple) and len(input_shape) == 3
            and all(_positive_int(v) for v in input_shape)):
        raise SpecError(f"{source}: 'input_shape' must be [height, width, channels] of positive "
                        f"integers. Got {input_shape!r}.")
    entries = data.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{source}: 'layers' must be a non-empty list. Got {entries!r}.")

    shape: tuple[int, ...] = tuple(int(v) for v in input_shape)
    layers: list[Layer] = []
    for i, entry in enumerate(entries, start=1):
        where = f"{source}: layer {i}"
        kind, args = _layer_entry(entry, where)
        resolved = _resolve_args(kind, args, f"{where} ({kind})")
        desc = Layer(i, kind, resolved, shape, shape, 0, 0, 0).label()
        out, trainable, frozen, macs = _infer(kind, resolved, shape, where, desc)
        layers.append(Layer(i, kind, resolved, shape, out, trainable, frozen, macs))
        shape = out

    last = layers[-1]
    if len(last.output_shape) != 1:
        raise SpecError(f"{source}: the model must end in a vector of class scores; the last "
                        f"layer ({last.label()}) outputs {last.output_shape}.")
    if last.args.get("activation") != "softmax":
        raise SpecError(f"{source}: layer {last.index} ({last.label()}) must have "
                        f"activation 'softmax': categorical cross-entropy trains on "
                        f"probabilities, as in the notebook.")
    return ModelSpec(name=name, input_shape=tuple(int(v) for v in input_shape),  # type: ignore[arg-type]
                     layers=tuple(layers), source=source, raw=data)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and aliases, and reads ``1e-7`` as a number
    (YAML 1.2)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        # A 350-byte file of nested aliases expands to gigabytes once written out as JSON
        # (results.json, config.json): a spec needs no aliases, so none is read.
        if self.check_event(yaml.events.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"the alias *{event.anchor} is not allowed (specs and study files "
                            f"take no YAML anchors or aliases)", event.start_mark)
        return super().compose_node(parent, index)


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping (first on line "
                            f"{seen[key]}); YAML would keep only the last", key_node.start_mark)
        seen[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)
# PyYAML follows YAML 1.1, where 1e-7 (no dot) is a string: a trap for optimizer epsilons.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML text; a syntax error names the file, line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = e.problem or e.context or "syntax error"
        if e.context and e.context_mark and e.problem_mark:
            what += f" ({e.context}, which starts on line {e.context_mark.line + 1})"
        raise SpecError(f"{where}: not valid YAML: {what}.") from e
    except yaml.YAMLError as e:  # e.g. a NUL byte (ReaderError): its text spans two lines
        raise SpecError(f"{source}: not valid YAML: {' '.join(str(e).split())}") from e
    except RecursionError as e:  # [[[[...]]]] thousands deep: the composer recurses
        raise SpecError(f"{source}: not valid YAML: nested too deeply.") from e
    except (ValueError, TypeError, OverflowError) as e:  # 2001-13-45, an unhashable key
        raise SpecError(f"{source}: not valid YAML: {type(e).__name__}: {e}.") from e


def read_yaml(path: str | Path, what: str = "model spec") -> Any:
    """Read and parse a YAML file; every error names the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SPEC_BYTES + 1)
    except OSError as e:
        raise SpecError(f"{path}: cannot read the {what} ({e.strerror}).") from e
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{path}: over {MAX_SPEC_BYTES >> 20} MiB; not a {what}.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not UTF-8 text (byte {e.start}); not a {what}.") from e
    return parse_yaml(text, str(path))


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a YAML model spec file."""
    return build_spec(read_yaml(path), source=str(path))


def check_classes(spec: ModelSpec, num_classes: int) -> None:
    """The last layer must have one unit per class of the dataset."""
    if spec.num_classes != num_classes:
        last = spec.layers[-1]
        raise SpecError(f"{spec.source}: layer {last.index} ({last.label()}) has "
                        f"{spec.num_classes} units but the dataset has {num_classes} classes; "
                        f"set its units to {num_classes}.")


def check_input_shape(spec: ModelSpec, image_shape: tuple[int, int, int]) -> None:
    """The spec's input_shape must be the dataset's (height, width, channels)."""
    if tuple(spec.input_shape) != tuple(image_shape):
        raise SpecError(f"{spec.source}: input_shape {list(spec.input_shape)} does not match "
                        f"the dataset's images, {list(image_shape)} (height, width, channels).")


# --- the registry of built-in models -------------------------------------------------------

def _builtin_files() -> dict[str, Any]:
    root = resources.files("cnnbench") / "specs"
    return {p.name[:-5]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def list_models(pattern: str = "*") -> list[str]:
    """Names of the built-in models matching a glob pattern, e.g. ``list_models("CNN_*")``."""
    from fnmatch import fnmatch
    return sorted(n for n in _builtin_files() if fnmatch(n, pattern))


def get_spec(name: str) -> ModelSpec:
    """A built-in model by name, or a spec file by path."""
    files = _builtin_files()
    if name in files:
        f = files[name]
        return build_spec(parse_yaml(f.read_text(), f"{name}.yaml"), source=f"{name}.yaml")
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        return load_spec(name)
    # Compared case-insensitively: 'cnn_mnist_1' should suggest CNN_MNIST_1.
    lower = {n.lower(): n for n in files}
    close = [lower[c] for c in difflib.get_close_matches(name.lower(), lower, n=3, cutoff=0.5)]
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise SpecError(f"unknown model '{name}'.{hint} Known models: {', '.join(sorted(files))}.")
