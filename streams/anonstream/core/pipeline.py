"""Pipeline definitions: YAML in pipelines/, parsed into frozen, validated objects.

A pipeline must say what happens to every field of its input contract: there is no
default action, so a new field cannot slip through unreviewed. Actions are checked against
the field's sensitivity class, and a wrong file fails at load time with the file, the field
path and the reason. The file is read section by section, one small function each, in
file order; the `fields:` section is core/fieldparse.py's, getters and errors are
core/reader.py's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from anonstream.core.actions import (
    ACTIONS,
    DIMENSION_ACTIONS,
    OTHER,
    Action,
    FieldAction,
    Mechanism,
)
from anonstream.core.contract import CONTRACTS, Contract
from anonstream.core.contribution import KEYS as CONTRIBUTION_KEYS
from anonstream.core.contribution import Contribution
from anonstream.core.decode import DEFAULT_MAX_FUTURE_MS
from anonstream.core.dpspec import (
    DpBudget,
    DpSpec,
    check_dp_pipeline,
    parse_budget,
    parse_dp,
    parse_mode,
)
from anonstream.core.fieldparse import GENERALIZERS, MAX_EDGES, field_action
from anonstream.core.keys import ROTATION_MS
from anonstream.core.reader import PipelineError, Reader, finite_number, parse_duration_ms

__all__ = [
    "ACTIONS", "GENERALIZERS", "MAX_EDGES", "OTHER", "Action", "Contribution", "FieldAction",
    "Mechanism", "Noise", "Output", "Pipeline", "PipelineError", "WindowSpec", "find_pipeline",
    "load_pipeline", "parse_duration_ms", "parse_pipeline",
]  # fmt: skip


@dataclass(frozen=True, slots=True)
class WindowSpec:
    size_ms: int
    step_ms: int
    allowed_lateness_ms: int
    # Events further ahead of the engine's clock are rejected (future_timestamp): they
    # would move the watermark and make everyone else's events late.
    max_future_skew_ms: int = DEFAULT_MAX_FUTURE_MS

    @property
    def hopping(self) -> bool:
        return self.step_ms < self.size_ms


@dataclass(frozen=True, slots=True)
class Noise:
    mechanism: Mechanism
    epsilon: float
    delta: float = 0.0


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    topic: str
    dimensions: tuple[str, ...]
    k: int
    noise: Noise | None = None
    privacy: str = "k"  # "k" (default) or "dp": see core/dpspec.py and core/dp.py
    dp: DpSpec | None = None


@dataclass(frozen=True, slots=True)
class Pipeline:
    name: str
    version: int
    description: str
    contract: Contract
    source_topic: str
    privacy_unit: tuple[str, ...]
    rotation_ms: int
    fields: dict[str, FieldAction]
    window: WindowSpec
    dimensions: tuple[str, ...]
    sums: tuple[str, ...]
    means: tuple[str, ...]
    histograms: tuple[str, ...]
    contribution: Contribution
    k: int
    noise: Noise | None
    outputs: tuple[Output, ...]
    source_file: str = field(default="<memory>", compare=False)
    dp_budget: DpBudget | None = None

    @property
    def measures(self) -> tuple[str, ...]:
        """Measured fields, in a fixed order: sums first, then means and histograms."""
        seen: dict[str, None] = {}
        for name in (*self.sums, *self.means, *self.histograms):
            seen[name] = None
        return tuple(seen)


def _noise(r: Reader, raw: object, path: str) -> Noise | None:
    if raw is None:
        return None
    d = r.mapping(raw, path)
    r.unknown_keys(d, {"mechanism", "epsilon", "delta"}, path)
    kind = d.get("mechanism", Mechanism.LAPLACE.value)
    if kind not in tuple(Mechanism):
        raise r.fail(f"{path}.mechanism", f"expected {' or '.join(Mechanism)}")
    mech = Mechanism(kind)
    eps = finite_number(d.get("epsilon"))
    if eps is None or not 0 < eps <= 20:
        raise r.fail(f"{path}.epsilon", "expected a number in (0, 20]")
    delta = finite_number(d.get("delta", 0.0))
    if delta is None:
        raise r.fail(f"{path}.delta", "expected a number")
    if mech is Mechanism.GAUSSIAN and not 0 < delta < 1e-3:
        raise r.fail(f"{path}.delta", "gaussian noise needs 0 < delta < 0.001")
    return Noise(mech, eps, delta)


_TOP_KEYS = {
    "pipeline", "version", "description", "contract", "source_topic", "privacy_unit",
    "pseudonym_rotation", "fields", "window", "dimensions", "metrics", "contribution",
    "k", "noise", "outputs", "dp_budget",
}  # fmt: skip
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


def _header(r: Reader, d: dict[str, Any]) -> tuple[str, int, Contract]:
    """`pipeline`, `version` and `contract`."""
    name = d.get("pipeline")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise r.fail("pipeline", "expected a lowercase name of letters, digits and _")
    version = r.positive_int(d.get("version"), "version")
    cname = d.get("contract")
    if not isinstance(cname, str) or cname not in CONTRACTS:
        raise r.fail("contract", f"expected one of {', '.join(CONTRACTS)}, got {cname!r}")
    return name, version, CONTRACTS[cname]


def _fields(r: Reader, d: dict[str, Any], contract: Contract) -> dict[str, FieldAction]:
    """`fields`: an explicit action for every field of the contract, and no other."""
    raw_fields = r.mapping(d.get("fields"), "fields")
    fields: dict[str, FieldAction] = {}
    for spec in contract.fields:
        if spec.name not in raw_fields:
            raise r.fail(
                f"fields.{spec.name}",
                "missing: every field of the input contract needs an explicit action",
            )
        fields[spec.name] = field_action(r, spec, raw_fields[spec.name], f"fields.{spec.name}")
    for extra in raw_fields:
        if extra not in fields:
            raise r.fail(f"fields.{extra}", f"not a field of the {contract.name} contract")
    if fields["event_id"].action is not Action.DEDUPE or fields["ts"].action is not Action.WINDOW:
        raise r.fail("fields", "event_id must be 'dedupe' and ts must be 'window'")
    return fields


def _privacy_unit(r: Reader, d: dict[str, Any], fields: dict[str, FieldAction]) -> tuple[str, ...]:
    unit = r.string_list(d.get("privacy_unit"), "privacy_unit")
    if not unit:
        raise r.fail("privacy_unit", "name the field(s) identifying a person, first present wins")
    for u in unit:
        if u not in fields or fields[u].action is not Action.PSEUDONYMIZE:
            raise r.fail("privacy_unit", f"{u!r} must be a field whose action is pseudonymize")
    return unit


# A window's rows are held this long past its end: a lateness of years (the red team passed
# 10**23 days) would keep every window's state for ever, and not one is released until then.
MAX_LATENESS_MS = 7 * 86_400_000


def _window(r: Reader, d: dict[str, Any], rotation: str) -> WindowSpec:
    """`window`; its size divides the key period `rotation`."""
    wd = r.mapping(d.get("window"), "window")
    r.unknown_keys(wd, {"size", "step", "allowed_lateness", "max_future_skew"}, "window")
    size = r.duration(wd.get("size"), "window.size")
    step = r.duration(wd.get("step", wd.get("size")), "window.step")
    lateness = r.duration(wd.get("allowed_lateness", "0s"), "window.allowed_lateness")
    if size <= 0 or step <= 0:
        raise r.fail("window", "size and step must be positive")
    if step > size or size % step:
        raise r.fail("window.step", "step must divide size (tumbling: step = size)")
    rotation_ms = ROTATION_MS[rotation]
    if rotation_ms % size or rotation_ms % step:
        # Then a window starts at most one key period before its events; it counts people
        # with the key of the period it starts in (windows.needs_earlier_key).
        raise r.fail("window.size", f"must divide the pseudonym rotation period ({rotation})")
    if not 0 <= lateness <= MAX_LATENESS_MS:
        raise r.fail("window.allowed_lateness", "expected a duration from 0s to 7d")
    skew = r.duration(
        wd.get("max_future_skew", f"{DEFAULT_MAX_FUTURE_MS}ms"), "window.max_future_skew"
    )
    if not 0 <= skew <= 86_400_000:
        raise r.fail("window.max_future_skew", "expected a duration from 0s to 1d")
    return WindowSpec(size, step, lateness, skew)


def _dimensions(r: Reader, d: dict[str, Any], fields: dict[str, FieldAction]) -> tuple[str, ...]:
    dims = r.string_list(d.get("dimensions"), "dimensions")
    for dim in dims:
        fa = fields.get(dim)
        if fa is None:
            raise r.fail("dimensions", f"{dim!r} is not a field")
        if fa.action not in DIMENSION_ACTIONS:
            raise r.fail(
                "dimensions", f"{dim!r} is {fa.action}: only kept or generalized fields can be "
                "dimensions (a pseudonym as a dimension would single people out)",
            )  # fmt: skip
    if len(set(dims)) != len(dims):
        raise r.fail("dimensions", "a dimension is listed twice")
    return dims


def _metrics(
    r: Reader, d: dict[str, Any], fields: dict[str, FieldAction]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """`metrics`: sums, means and histograms, each of measured fields."""
    md = r.mapping(d.get("metrics") or {}, "metrics")
    r.unknown_keys(md, {"sums", "means", "histograms"}, "metrics")
    sums = r.string_list(md.get("sums"), "metrics.sums")
    means = r.string_list(md.get("means"), "metrics.means")
    hists = r.string_list(md.get("histograms"), "metrics.histograms")
    for key, names in (("sums", sums), ("means", means), ("histograms", hists)):
        for n in names:
            if n not in fields or fields[n].action is not Action.MEASURE:
                raise r.fail(f"metrics.{key}", f"{n!r} must be a field whose action is measure")
            if key == "histograms" and not fields[n].edges:
                raise r.fail(f"fields.{n}.edges", "a histogram needs edges on its measure")
    return sums, means, hists


def _contribution(r: Reader, d: dict[str, Any]) -> Contribution:
    """`contribution`: its keys are the fields of core/contribution.py's `Contribution`."""
    cd = r.mapping(d.get("contribution") or {}, "contribution")
    r.unknown_keys(cd, set(CONTRIBUTION_KEYS), "contribution")
    return Contribution(
        **{
            key: r.positive_int(cd.get(key, default), f"contribution.{key}")
            for key, default in CONTRIBUTION_KEYS.items()
        }
    )


def _output(
    r: Reader, i: int, ro: object, name: str, dims: tuple[str, ...], k: int, noise: Noise | None
) -> Output:
    """One entry of `outputs`; unset keys take the pipeline's values."""
    p = f"outputs[{i}]"
    od = r.mapping(ro, p)
    r.unknown_keys(od, {"name", "topic", "dimensions", "k", "noise", "privacy", "dp"}, p)
    oname = od.get("name", "default")
    if not isinstance(oname, str) or not _NAME.fullmatch(oname):
        raise r.fail(f"{p}.name", "expected a lowercase name")
    default_topic = f"anon.aggregates.{name}" + ("" if oname == "default" else f".{oname}")
    topic = od.get("topic", default_topic)
    odims = r.string_list(od.get("dimensions"), f"{p}.dimensions") or dims
    if not set(odims) <= set(dims) or len(set(odims)) != len(odims):
        raise r.fail(f"{p}.dimensions", "must be a subset of the pipeline's dimensions")
    ok = r.positive_int(od.get("k", k), f"{p}.k", minimum=2)
    if ok < k:
        raise r.fail(f"{p}.k", f"an output cannot lower the pipeline's k ({k})")
    onoise = _noise(r, od["noise"], f"{p}.noise") if "noise" in od else noise
    mode = parse_mode(od.get("privacy", "k"), f"{p}.privacy", r.fail)
    odp = parse_dp(od.get("dp"), f"{p}.dp", r.fail) if mode == "dp" else None
    if mode == "dp" and "noise" in od:
        raise r.fail(f"{p}.noise", "a dp output draws its own noise: use dp, not noise")
    if mode != "dp" and "dp" in od:
        raise r.fail(f"{p}.dp", "needs privacy: dp")
    onoise = None if mode == "dp" else onoise
    return Output(oname, str(topic), odims, ok, onoise, mode, odp)


def _outputs(
    r: Reader, d: dict[str, Any], name: str, dims: tuple[str, ...], k: int, noise: Noise | None
) -> tuple[Output, ...]:
    """`outputs` (one output named default if none); names unique, secondary outputs'
    dimensions within the first's."""
    raw_outputs = d.get("outputs") or [{"name": "default"}]
    if not isinstance(raw_outputs, list):
        raise r.fail("outputs", "expected a list")
    outputs = [_output(r, i, ro, name, dims, k, noise) for i, ro in enumerate(raw_outputs)]
    if len({o.name for o in outputs}) != len(outputs):
        raise r.fail("outputs", "output names must be unique")
    for i, o in enumerate(outputs[1:], start=1):
        # Secondary outputs are built from the primary's released cells (see release.py).
        if not set(o.dimensions) <= set(outputs[0].dimensions):
            raise r.fail(
                f"outputs[{i}].dimensions",
                f"must be a subset of the first output's dimensions {list(outputs[0].dimensions)}",
            )
    return tuple(outputs)


def parse_pipeline(doc: object, source: str = "<memory>") -> Pipeline:
    """A validated pipeline from a parsed YAML document, section by section in file order;
    the first problem found raises a PipelineError naming `source`, the path and the reason."""
    r = Reader(source)
    d = r.mapping(doc, "(top)")
    r.unknown_keys(d, _TOP_KEYS, "")
    name, version, contract = _header(r, d)
    fields = _fields(r, d, contract)
    unit = _privacy_unit(r, d, fields)
    rotation = d.get("pseudonym_rotation", "daily")
    if not isinstance(rotation, str) or rotation not in ROTATION_MS:
        raise r.fail("pseudonym_rotation", f"expected one of {', '.join(ROTATION_MS)}")
    window = _window(r, d, rotation)
    dims = _dimensions(r, d, fields)
    sums, means, hists = _metrics(r, d, fields)
    contribution = _contribution(r, d)
    k = r.positive_int(d.get("k", 10), "k", minimum=2)
    noise = _noise(r, d.get("noise"), "noise")
    outputs = _outputs(r, d, name, dims, k, noise)
    dp_budget = parse_budget(d.get("dp_budget"), "dp_budget", r.fail)
    clamps = {
        n: fa.clamp
        for n, fa in fields.items()
        if fa.clamp is not None and n in (*sums, *means, *hists)
    }
    bounds = contribution.max_events_per_unit_per_cell * contribution.max_cells_per_unit_per_window
    check_dp_pipeline(list(outputs), dp_budget, clamps, r.fail, bounds)

    return Pipeline(
        name=name,
        version=version,
        description=str(d.get("description", "")).strip(),
        contract=contract,
        source_topic=str(d.get("source_topic", contract.topic)),
        privacy_unit=unit,
        rotation_ms=ROTATION_MS[rotation],
        fields=fields,
        window=window,
        dimensions=dims,
        sums=sums,
        means=means,
        histograms=hists,
        contribution=contribution,
        k=k,
        noise=noise,
        outputs=outputs,
        source_file=source,
        dp_budget=dp_budget,
    )


def load_pipeline(path: str | Path) -> Pipeline:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(str(p), "(file)", exc.strerror or "cannot read") from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text (a byte at offset {exc.start} cannot be decoded)"
        raise PipelineError(str(p), "(file)", reason) from None
    try:
        doc = yaml.safe_load(text)
    except RecursionError:
        raise PipelineError(str(p), "(file)", "not valid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "(file)"
        reason = f"not valid YAML: {getattr(exc, 'problem', exc)}"
        raise PipelineError(str(p), where, reason) from None
    if _expanded_size(doc) > MAX_VALUES:
        raise PipelineError(
            str(p), "(file)", f"more than {MAX_VALUES:,} values once its YAML aliases are "
            "expanded (an alias bomb?)",
        )  # fmt: skip
    return parse_pipeline(doc, str(p))


MAX_VALUES = 100_000  # a pipeline file's values with aliases expanded; real ones have hundreds


def _expanded_size(doc: object) -> int:
    """How many values `doc` holds with every alias expanded, counted up to just past
    MAX_VALUES: a few lines of nested aliases expand to billions, and every later step
    (checks, error messages that quote a value) would walk them all."""
    n, todo = 0, [doc]
    while todo and n <= MAX_VALUES:
        x = todo.pop()
        n += 1
        if isinstance(x, dict):
            todo.extend(x.keys())
            todo.extend(x.values())
        elif isinstance(x, list):
            todo.extend(x)
    return n


def find_pipeline(name_or_path: str, directory: str | Path = "pipelines") -> Pipeline:
    """A pipeline by file path, or by its name (the `pipeline:` key, which `validate`
    prints and the worker logs) within the pipelines directory, whatever the file is
    called."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return load_pipeline(p)
    declared = {f: _declared_name(f) for f in sorted(Path(directory).glob("*.yaml"))}
    matches = [f for f, name in declared.items() if name == name_or_path]
    if len(matches) > 1:
        raise PipelineError(
            str(directory), "pipeline", f"{name_or_path!r} is declared by {len(matches)} files: "
            f"{', '.join(str(f) for f in matches)}"
        )  # fmt: skip
    if matches:
        return load_pipeline(matches[0])
    candidate = Path(directory) / f"{name_or_path}.yaml"
    if candidate in declared:  # named after the file: load it to report what is wrong
        found = load_pipeline(candidate)
        raise PipelineError(
            str(candidate), "pipeline",
            f"this file declares pipeline {found.name!r}: use -p {found.name}",
        )  # fmt: skip
    known = sorted({n for n in declared.values() if n})
    raise PipelineError(
        str(candidate), "(file)", f"no such pipeline; known: {', '.join(known) or 'none'}"
    )


def _declared_name(path: Path) -> str | None:
    """The `pipeline:` key of a file, without validating the rest (None if unreadable)."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
        return None
    name = doc.get("pipeline") if isinstance(doc, dict) else None
    return name if isinstance(name, str) else None
