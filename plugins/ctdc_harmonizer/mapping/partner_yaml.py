"""partner.yaml: pydantic models of every key, and errors that name the key and its line.

The `derive:` section is built from the derivation registry (harmonize/derivations.py): the
variables that can be derived, the methods each accepts and the keys each method needs come
from there, so a new method needs no change here.
"""

from __future__ import annotations

import codecs
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from ctdc_harmonizer.codebook import default_codebook
from ctdc_harmonizer.errors import MappingError
from ctdc_harmonizer.fileio import compose_yaml, load_yaml
from ctdc_harmonizer.harmonize import derivations
from ctdc_harmonizer.harmonize.unmapped import DEFAULT_MIN_ROWS
from ctdc_harmonizer.mapping.spec import PARTNER_FILE


def _text(value: Any) -> Any:
    """Numbers written unquoted (`-99`) are text; YAML's booleans (`No`, `yes`, `off`) are
    refused, because the partner almost certainly meant the word."""
    if isinstance(value, bool):
        raise ValueError('YAML reads this as true/false: put the word in quotes ("No")')
    if isinstance(value, int | float):
        return str(value)
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) else value


Text = Annotated[str, BeforeValidator(_text)]
Name = Annotated[str, BeforeValidator(_text), Field(min_length=1)]
TextList = Annotated[list[Text], BeforeValidator(_as_list)]
NameList = Annotated[list[Name], BeforeValidator(_as_list), Field(min_length=1)]


class _Model(BaseModel):
    """Unknown keys are errors (a typo must not pass as a default); `key:` with nothing
    after it means the key is not given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class ReaderModel(_Model):
    format: Literal["excel", "csv", "jsonl"]
    files: NameList
    encoding: Name = "utf-8"
    # The data sheet by name; without one, the workbook's single visible sheet. Never a
    # position: the first sheet may be last year's export, hidden (mappings/README.md).
    sheet: Annotated[str, Field(min_length=1)] | None = None
    header_row: int = Field(1, ge=1)
    data_start_row: int | None = Field(None, ge=2)
    csv_delimiter: str = Field(",", min_length=1, max_length=1)

    @field_validator("sheet", mode="before")
    @classmethod
    def _sheet_by_name(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(
                "name the sheet (a position may point at a hidden sheet), or leave the key "
                "out to read the workbook's single visible sheet"
            )
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown text encoding '{value}'") from None
        return value

    @model_validator(mode="after")
    def _data_after_header(self) -> ReaderModel:
        if self.data_start_row is not None and self.data_start_row <= self.header_row:
            raise ValueError("data_start_row must be greater than header_row")
        return self


class _Source(_Model):
    """One source of a derived variable; `method` is added per variable from the registry."""

    field: Name
    reference: Name | None = None

    @model_validator(mode="after")
    def _reference_as_the_method_needs(self) -> _Source:
        needs = derivations.REGISTRY[self.method].reference
        if needs and not self.reference:
            raise ValueError(f"method {self.method} needs 'reference' ({needs})")
        if self.reference and not needs:
            raise ValueError(f"method {self.method} takes no 'reference'")
        return self


def _derive_model() -> type[_Model]:
    """`derive:`: one key per derivable variable, in codebook order, each a list of sources
    whose `method` may be any registered method for that variable. A variable the codebook
    marks required (the year of registration) needs at least one source."""
    codebook = default_codebook()
    keys: dict[str, Any] = {}
    for variable in derivations.derivable_variables(codebook):
        names = tuple(m.name for m in derivations.methods_for(variable))
        source = create_model(f"{variable}Source", __base__=_Source, method=(Literal[names], ...))
        required = codebook.variable(variable).required
        keys[variable] = (list[source], Field(min_length=1) if required else [])
    return create_model("DeriveModel", __base__=_Model, **keys)


DeriveModel = _derive_model()


class InclusionModel(_Model):
    rule: Name
    field: Name
    exclude: NameList


class YearRangeModel(_Model):
    min: int | None = Field(None, ge=1900, le=2100)
    max: int | None = Field(None, ge=1900, le=2100)

    @model_validator(mode="after")
    def _ordered(self) -> YearRangeModel:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is greater than max")
        return self


class CoverageModel(_Model):
    threshold: float = Field(0.0, ge=0.0, le=1.0)
    # k: an unknown value is listed in the restricted unmapped report only from k rows on.
    report_min_rows: int = Field(DEFAULT_MIN_ROWS, ge=1)


class WithdrawalsModel(_Model):
    match_on: NameList

    @field_validator("match_on")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a field is listed twice")
        return value


class LinkageModel(_Model):
    """Fields the cross-partner linkage keys are made of (docs/privacy.md)."""

    names: NameList
    birthdate: Name


class DeliveryModel(_Model):
    """How the partner delivers (mappings/README.md, "Deliveries over time")."""

    # full: each delivery is the partner's whole current dataset (records it no longer holds
    # are retired); incremental: each delivery adds records and revises known ones.
    mode: Literal["full", "incremental"] = "full"
    # discontinued: no delivery is expected any more; its history stays in every release.
    status: Literal["active", "discontinued"] = "active"
    # A partner not delivered for more releases than this is flagged in the run's summary.
    max_releases_without_delivery: int = Field(2, ge=0)
    # A full delivery retiring more than this share of the partner's current records is
    # almost always a partial extract: the run stops unless it names the partner in
    # `accept_retirements`.
    max_retired_share: float = Field(0.2, ge=0.0, le=1.0)


class PartnerModel(_Model):
    partner: Name
    name: Text = ""
    datasource: Text = ""
    reader: ReaderModel
    null_values: TextList = [""]
    record_id: Text = ""
    inclusion: list[InclusionModel] = []
    year_range: YearRangeModel = YearRangeModel()
    derive: DeriveModel
    coverage: CoverageModel = CoverageModel()
    withdrawals: WithdrawalsModel | None = None
    linkage: LinkageModel | None = None
    delivery: DeliveryModel = DeliveryModel()


def _yaml_lines(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """Line number of every key and list item in a YAML document, by its path; a key
    written twice (which YAML silently resolves to the last) is refused here."""
    if node is None:
        return {}
    lines = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key, value in node.value:
            name = key.value
            where = path + (name,)
            if name in seen:
                raise MappingError(
                    PARTNER_FILE,
                    f"key '{_dotted(where)}' is given twice",
                    line=key.start_mark.line + 1,
                )
            seen.add(name)
            lines.update(_yaml_lines(value, where))
            lines[where] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines.update(_yaml_lines(item, path + (index,)))
    return lines


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _partner_error(error: ValidationError, lines: dict[tuple, int]) -> MappingError:
    """The first pydantic error as a MappingError with the YAML line of its key. Only the
    location and pydantic's message are used (the message describes, never quotes)."""
    first = error.errors(include_url=False, include_input=False)[0]
    loc = tuple(first["loc"])
    known = loc
    while known and known not in lines:
        known = known[:-1]
    # Union branches add type names to the location; keys that do not exist yet do not.
    key = loc if first["type"] in {"missing", "extra_forbidden"} else known
    line = lines.get(known)
    if first["type"] == "missing":
        return MappingError(PARTNER_FILE, f"required key '{_dotted(key)}' is missing", line=line)
    if first["type"] == "extra_forbidden":
        return MappingError(PARTNER_FILE, f"unknown key '{_dotted(key)}'", line=line)
    message = first["msg"].removeprefix("Value error, ")
    if not key:
        return MappingError(
            PARTNER_FILE, "must be a mapping of keys (partner:, reader:, derive: ...)", line=line
        )
    return MappingError(PARTNER_FILE, f"key '{_dotted(key)}': {message}", line=line)


def parse_partner_yaml(path: Path) -> tuple[PartnerModel, dict[tuple, int]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MappingError(PARTNER_FILE, f"cannot be read ({type(exc).__name__})") from None
    try:
        raw = load_yaml(text)
        lines = _yaml_lines(compose_yaml(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError(
            PARTNER_FILE, "not valid YAML", line=mark.line + 1 if mark else None
        ) from None
    try:
        return PartnerModel.model_validate(raw if raw is not None else {}), lines
    except ValidationError as exc:
        raise _partner_error(exc, lines) from None
