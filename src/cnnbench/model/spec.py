"""Model specs as data: parse, validate, infer shapes, count parameters and FLOPs; what each
layer kind takes and computes is its entry in :mod:`cnnbench.model.layers`.

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
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnbench.constraints import integer, shown
from cnnbench.errors import UsageError
from cnnbench.model.layers import DROPOUT_KINDS, KINDS, MAX_WIDTH, LayerKind
from cnnbench.model.shapes import LayerProblem


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
# An image's height and width, and a model's depth, beyond any model cnnbench trains; a
# repeated block or a pasted list cannot make a spec that takes minutes just to validate.
MAX_IMAGE_SIDE = 16_384
MAX_LAYERS = 1_000
SIDE = integer(1, MAX_IMAGE_SIDE)
CHANNELS = integer(1, MAX_WIDTH)


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

    @property
    def all_args(self) -> dict[str, Any]:
        """Every argument of the layer's kind, the ones ``args`` leaves out at their default
        (:attr:`LayerKind.added`) filled in: what the builder reads."""
        return KINDS[self.kind].complete(self.args)

    def label(self) -> str:
        """Short description, e.g. ``Conv2D 32 5x5 same relu``."""
        return KINDS[self.kind].describe(self.all_args)

    def shorthand(self) -> str:
        """The notebook's shorthand, e.g. ``Conv2D(32,5x5)`` or ``Dropout(0.5)``."""
        return KINDS[self.kind].short(self.all_args)


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
        return [float(layer.args["rate"]) for layer in self.layers
                if layer.kind in DROPOUT_KINDS]

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


def _kind(kind: str, where: str) -> LayerKind:
    if kind not in KINDS:
        alias = [k.name for k in KINDS.values() if kind in k.keras_aliases]  # MaxPool2D
        close = alias or difflib.get_close_matches(kind, KINDS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise SpecError(
            f"{where}: unknown layer '{kind}'.{hint} Known layers: {', '.join(KINDS)}."
        )
    return KINDS[kind]


def build_layer(index: int, kind: str, args: dict[str, Any], shape: tuple[int, ...],
                where: str) -> Layer:
    """One layer validated by its registry entry, its shapes and costs inferred."""
    entry = _kind(kind, f"{where} ({kind})")
    full = entry.resolve(args, f"{where} ({kind})", SpecError)
    try:
        out, trainable, frozen, macs = entry.output(full, shape)
    except LayerProblem as e:
        raise SpecError(f"{where} ({entry.describe(full)}) {e}") from None
    return Layer(index, kind, entry.key_args(full), shape, out, trainable, frozen, macs)


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
            and SIDE(input_shape[0]) and SIDE(input_shape[1]) and CHANNELS(input_shape[2])):
        raise SpecError(f"{source}: 'input_shape' must be [height, width, channels] of positive "
                        f"integers (height and width at most {MAX_IMAGE_SIDE:_}, channels at "
                        f"most {MAX_WIDTH:_}). Got {shown(input_shape)}.")
    entries = data.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{source}: 'layers' must be a non-empty list. Got {shown(entries)}.")
    if len(entries) > MAX_LAYERS:
        raise SpecError(f"{source}: 'layers' has {len(entries):,} layers; a spec has at most "
                        f"{MAX_LAYERS:,}.")

    shape: tuple[int, ...] = tuple(int(v) for v in input_shape)
    layers: list[Layer] = []
    for i, entry in enumerate(entries, start=1):
        where = f"{source}: layer {i}"
        kind, args = _layer_entry(entry, where)
        layers.append(build_layer(i, kind, args, shape, where))
        shape = layers[-1].output_shape

    last = layers[-1]
    if len(last.output_shape) != 1:
        raise SpecError(f"{source}: the model must end in a vector of class scores; the last "
                        f"layer ({last.label()}) outputs {last.output_shape}.")
    if last.all_args.get("activation") != "softmax":
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
            event = self.peek_event()  # type: ignore[no-untyped-call]  # types-PyYAML leaves it bare
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
