"""Share links: the page's settings as a URL query, and back.

Version 1 (``v=1``, and every link without ``v``): prompt, model (when not the default), chat,
samplers (comma-separated), seed, max_new_tokens, and ``SAMPLER.SETTING`` for the chosen
samplers' settings. A later format bumps ``v`` and keeps reading this one.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import gradio as gr

from ..engine import MAX_NEW_TOKENS
from ..models import DEFAULT_MODEL
from ..samplers import SAMPLERS, PlaygroundError
from .settings import SettingField, _integer

LINK_VERSION = 1


def share_query(prompt: str, model: str, chat: bool, samplers: list[str], max_new_tokens: Any, seed: Any,
                fields: list[SettingField], values: list[Any]) -> str:
    """The query string that restores these settings (settings of the chosen samplers only)."""
    params: dict[str, Any] = {"v": LINK_VERSION, "prompt": prompt, "samplers": ",".join(samplers or []),
                              "seed": seed, "max_new_tokens": max_new_tokens, "chat": int(bool(chat))}
    if model and model != DEFAULT_MODEL:
        params["model"] = model
    for f, value in zip(fields, values):
        if f.sampler in (samplers or []) and value is not None and value != "":
            params[f.key] = value
    return urlencode(params)


def _page_url(request: gr.Request | None) -> str:
    """The page's address without its query: from the Referer (the page), else the Host header."""
    headers = dict(getattr(request, "headers", None) or {})
    referer = headers.get("referer")
    if referer:
        parts = urlsplit(referer)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    host = headers.get("x-forwarded-host") or headers.get("host") or "localhost:7860"
    scheme = headers.get("x-forwarded-proto", "http")
    return f"{scheme}://{host}/"


def read_query(query: dict[str, str], fields: list[SettingField]) -> tuple[dict[str, Any], list[str]]:
    """Page values from a share link's query: {name: value}, plus a warning per bad parameter."""
    out: dict[str, Any] = {}
    problems: list[str] = []
    version = query.get("v", "1").strip()
    if version != str(LINK_VERSION):
        problems.append(f"this link is of format v={version}, newer than this playground reads (v={LINK_VERSION}); "
                        "the settings it shares may not all be restored")
    if "prompt" in query:
        out["prompt"] = query["prompt"]
    if "model" in query:
        out["model"] = query["model"]
    if "chat" in query:
        out["chat"] = query["chat"].strip().lower() in ("1", "true", "yes", "on")
    if "samplers" in query:
        names = [s.strip() for s in query["samplers"].split(",") if s.strip()]
        bad = [s for s in names if s not in SAMPLERS]
        if bad:
            problems.append(f"unknown sampler(s) in the link: {', '.join(bad)}")
        out["samplers"] = [s for s in names if s in SAMPLERS]
    for key, limit in (("seed", None), ("max_new_tokens", MAX_NEW_TOKENS)):
        if key in query:
            try:
                value = _integer(query[key], key)
                if value < (1 if limit else 0) or (limit and value > limit):
                    raise PlaygroundError(f"{key} out of range: {value}")
                out[key] = value
            except PlaygroundError as exc:
                problems.append(str(exc))
    for f in fields:
        if f.key in query:
            raw = query[f.key]
            try:
                if f.kind is bool:
                    out[f.key] = raw.strip().lower() in ("1", "true", "yes", "on")
                elif f.kind is int:
                    out[f.key] = _integer(raw, f.key)
                elif f.kind is float:
                    out[f.key] = float(raw)
                else:
                    out[f.key] = raw
            except (PlaygroundError, ValueError):
                problems.append(f"{f.key} must be {f.kind.__name__}, got {raw!r}")
    return out, problems
