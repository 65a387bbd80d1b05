"""Share links: the page's run settings as a URL query, and back.

Version 2 (``v=2``): prompt, model (when not the default), chat, seed, max_new_tokens, ``samples``
(samples per column, when more than one), ``columns`` (a JSON list of {"sampler", "settings",
"label"}, in order) and, for a branch, ``branch`` (the branch point as JSON: column, step, token,
replaced, continuation and their texts).
Version 1 (``v=1``, and every link without ``v``): ``samplers`` (comma-separated, one column
each) and ``SAMPLER.SETTING`` for their settings. Both are read; links are written as v2.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import gradio as gr

from ..columns import ColumnSpec, columns_from_json
from ..engine import MAX_NEW_TOKENS
from ..models import DEFAULT_MODEL
from ..samples import MAX_SAMPLES
from ..samplers import SAMPLERS, PlaygroundError
from .columns import SettingField, integer_value

LINK_VERSION = 2
BRANCH_KEYS = ("column", "step", "token", "replaced", "continuation", "column_label", "token_text", "replaced_text",
               "continuation_text")


def share_query(prompt: str, model: str, chat: bool, columns: list[ColumnSpec], max_new_tokens: Any, seed: Any,
                branch: dict[str, Any] | None = None, samples: Any = 1) -> str:
    """The query string that restores these settings (and the branch point, if any)."""
    params: dict[str, Any] = {"v": LINK_VERSION, "prompt": prompt, "seed": seed, "max_new_tokens": max_new_tokens,
                              "chat": int(bool(chat)),
                              "columns": json.dumps([c.to_dict() for c in columns], ensure_ascii=False,
                                                    separators=(",", ":"))}
    if model and model != DEFAULT_MODEL:
        params["model"] = model
    if samples != 1:
        params["samples"] = samples
    if branch:
        params["branch"] = json.dumps({k: branch[k] for k in BRANCH_KEYS if k in branch}, ensure_ascii=False,
                                      separators=(",", ":"))
    return urlencode(params)


def page_url(request: gr.Request | None) -> str:
    """The page's address without its query: from the Referer (the page), else the Host header."""
    headers = dict(getattr(request, "headers", None) or {})
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost:7860"
    scheme = headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{host}/"


def _typed(raw: str, f: SettingField) -> Any:
    if f.kind is bool:
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if f.kind is int:
        return integer_value(raw, f.key)
    if f.kind is float:
        return float(raw)
    return raw


def _v1_columns(query: dict[str, str], fields: list[SettingField], problems: list[str]) -> list[ColumnSpec]:
    """A v1 link's columns: one per named sampler, with its ``SAMPLER.SETTING`` values."""
    names = [s.strip() for s in query.get("samplers", "").split(",") if s.strip()]
    bad = [s for s in names if s not in SAMPLERS]
    if bad:
        problems.append(f"unknown sampler(s) in the link: {', '.join(bad)}")
    specs = [ColumnSpec(s) for s in names if s in SAMPLERS]
    for f in fields:
        if f.key in query:
            try:
                value = _typed(query[f.key], f)
            except (PlaygroundError, ValueError):
                problems.append(f"{f.key} must be {f.kind.__name__}, got {query[f.key]!r}")
                continue
            for spec in specs:
                if spec.sampler == f.sampler:
                    spec.settings[f.name] = value
    return specs


def _branch(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict) or not all(k in data for k in ("column", "step", "token", "continuation")):
        raise ValueError("not a branch point")
    if not all(isinstance(t, int) for t in data["continuation"]):
        raise ValueError("its continuation is not token ids")
    return {k: data[k] for k in BRANCH_KEYS if k in data}


def read_query(query: dict[str, str], fields: list[SettingField]) -> tuple[dict[str, Any], list[str]]:
    """Page values from a share link's query: {name: value} (``columns`` as ColumnSpecs), plus a warning per
    bad parameter."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    version = query.get("v", "1").strip()
    if version not in ("1", str(LINK_VERSION)):
        problems.append(f"this link is of format v={version}, newer than this playground reads (v={LINK_VERSION}); "
                        "the settings it shares may not all be restored")
    for key in ("prompt", "model"):
        if key in query:
            out[key] = query[key]
    if "chat" in query:
        out["chat"] = query["chat"].strip().lower() in ("1", "true", "yes", "on")
    if "columns" in query:
        try:
            out["columns"] = columns_from_json(query["columns"])
        except PlaygroundError as exc:
            problems.append(f"the link's columns were not restored: {exc}")
    elif "samplers" in query:
        out["columns"] = _v1_columns(query, fields, problems)
    if "branch" in query:
        try:
            out["branch"] = _branch(query["branch"])
        except (ValueError, TypeError) as exc:
            problems.append(f"the link's branch point was not restored: {exc}")
    for key, limit in (("seed", None), ("max_new_tokens", MAX_NEW_TOKENS), ("samples", MAX_SAMPLES)):
        if key in query:
            try:
                value = integer_value(query[key], key)
                if value < (1 if limit else 0) or (limit and value > limit):
                    raise PlaygroundError(f"{key} out of range: {value}")
                out[key] = value
            except PlaygroundError as exc:
                problems.append(str(exc))
    return out, problems
