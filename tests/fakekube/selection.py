"""Label selectors (=, ==, !=, in, notin, exists, !exists, gt, lt) and field selectors."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .resources import Resource
from .util import Obj, get_path


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str                    # "=", "!=", "in", "notin", "exists", "!exists", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op in ("gt", "lt"):
            try:
                v, bound = int(value or ""), int(self.values[0])
            except ValueError:
                return False
            return present and (v > bound if self.op == "gt" else v < bound)
        return False


_KEY = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> list[Requirement]:
    reqs: list[Requirement] = []
    for part in _split_top(text or ""):
        m = re.fullmatch(r"(\S+)\s+(in|notin)\s*\((.*)\)", part)
        if m:
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(_check_key(m.group(1), text), m.group(2), values))
            continue
        m = re.fullmatch(r"([^!=<>\s]+)\s*(==|!=|=|<|>)\s*(\S*)", part)
        if m:
            op = {"==": "=", "<": "lt", ">": "gt"}.get(m.group(2), m.group(2))
            value = m.group(3)
            if not re.fullmatch(_VALUE, value) or len(value) > 63:
                raise bad_request(f"unable to parse requirement: values[0][{m.group(1)}]: Invalid value: "
                                  f'"{value}": a valid label must be an empty string or consist of alphanumeric '
                                  "characters, '-', '_' or '.', and must start and end with an alphanumeric character")
            reqs.append(Requirement(_check_key(m.group(1), text), op, (value,)))
            continue
        m = re.fullmatch(r"(!?)\s*(\S+)", part)
        if m:
            reqs.append(Requirement(_check_key(m.group(2), text), "!exists" if m.group(1) else "exists"))
            continue
        raise bad_request(f"unable to parse requirement: found '{part}', expected: identifier")
    return reqs


def _check_key(key: str, text: str | None) -> str:
    if not re.fullmatch(_KEY, key):
        raise bad_request(f"unable to parse requirement: invalid label key \"{key}\" in selector \"{text}\"")
    return key


def labels_match(reqs: list[Requirement], obj: Obj) -> bool:
    labels = get_path(obj, "metadata", "labels", default={}) or {}
    return all(r.matches(labels) for r in reqs)


def selector_from_match(selector: Obj | None) -> list[Requirement]:
    """A metav1.LabelSelector (matchLabels / matchExpressions) as requirements."""
    reqs: list[Requirement] = []
    if not selector:
        return reqs
    for k, v in (selector.get("matchLabels") or {}).items():
        reqs.append(Requirement(k, "=", (v,)))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for e in selector.get("matchExpressions") or []:
        reqs.append(Requirement(e["key"], ops[e["operator"]], tuple(e.get("values") or ())))
    return reqs


# -- field selectors -------------------------------------------------------------------

@dataclass(frozen=True)
class FieldRequirement:
    field: str
    op: str        # "=" or "!="
    value: str


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", r"\1", v)


def parse_field_selector(text: str | None, res: Resource) -> list[FieldRequirement]:
    reqs: list[FieldRequirement] = []
    for part in re.split(r"(?<!\\),", text or ""):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(.+?)(==|!=|=)(.*)", part)
        if not m:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        field = m.group(1).strip()
        if field not in ("metadata.name", "metadata.namespace") and field not in res.field_labels:
            raise bad_request(f'field label not supported: {field}')
        reqs.append(FieldRequirement(field, "!=" if m.group(2) == "!=" else "=", _unescape(m.group(3))))
    return reqs


_SPECIAL: dict[str, Callable[[Obj], Any]] = {
    "status.successful": lambda o: get_path(o, "status", "succeeded", default=0),
    "source": lambda o: get_path(o, "source", "component", default=""),
    "spec.unschedulable": lambda o: "true" if get_path(o, "spec", "unschedulable") else "false",
    "spec.hostNetwork": lambda o: "true" if get_path(o, "spec", "hostNetwork") else "false",
}


def field_value(obj: Obj, field: str) -> str:
    value = _SPECIAL[field](obj) if field in _SPECIAL else get_path(obj, *field.split("."), default="")
    return str(value)


def fields_match(reqs: list[FieldRequirement], obj: Obj) -> bool:
    for r in reqs:
        v = field_value(obj, r.field)
        if (v == r.value) != (r.op == "="):
            return False
    return True
