"""Loading prompt datasets for RL training and evaluation.

:func:`load_prompt_dataset` returns a :class:`datasets.Dataset` with the columns

* ``prompt``: a string, or a list of chat messages ``[{"role", "content"}, ...]`` (rendered
  later with the tokenizer's chat template, see :func:`spro.data.prompts.render_prompt`);
* ``answer``: the ground truth as a string (a final answer for math; for code rows of
  Eurus-style data, the JSON test specification);
* ``data_source``: where the row comes from (taken from the data when present, else the
  schema name, e.g. ``"gsm8k"``), for per-source breakdowns;
* every other column of the source, passed through (nested dicts as JSON strings).

Sources: a local ``.jsonl``/``.json``/``.parquet``/``.csv`` file, a folder written by
``Dataset.save_to_disk``/``DatasetDict.save_to_disk``, or (when online) a Hub dataset id
through :func:`datasets.load_dataset`.

Schemas (``schema="auto"`` picks one from the columns, in this order):

* ``"eurus"`` (Eurus-2-RL-Data / verl style): ``prompt`` (chat list or string),
  ``reward_model.ground_truth`` -> ``answer``, ``data_source`` kept;
* ``"gsm8k"``: ``question`` -> prompt, ``answer`` ending in ``#### n`` -> ``n`` (commas
  removed); the worked solution before ``####`` is kept as ``solution``;
* ``"math"`` (Hendrycks MATH): ``problem`` -> prompt, ``answer`` column if present, else the last
  ``\\boxed{}`` of ``solution``;
* ``"plain"``: ``prompt`` and ``answer`` columns as they are.

``column_map`` says where the columns spro needs are, first: ``{"prompt": "instruction", "answer":
"reward_model.ground_truth"}`` takes the prompt from the source column ``instruction`` and the
answer from the nested field ``reward_model.ground_truth`` (the column spro needs -> the source
column; dotted names reach into nested dicts); with a ``column_map`` and ``schema="auto"`` the
``"plain"`` schema is used.

Bad rows (missing or empty prompt/answer, an answer that cannot be parsed, text that is not
valid UTF-8, an unreadable JSON line) are, by default, **dropped** (``on_bad_row="drop"``); with
``"keep"`` they stay with ``answer = None`` (reward functions score such rows ``None``); with
``"error"`` the first one raises ``ValueError``. Either way each is reported by where it is in the
source, 1-based: its line in a ``.jsonl`` / ``.csv`` file (``line 3``; a ``.json`` file of JSON
lines too), else its row (``row 3``: the 3rd item of a JSON array, a parquet file or a saved
dataset); a warning per row, up to 20, then a summary; and the counts are recorded in the dataset:
:func:`get_load_report` reads them back from ``dataset.info.description``. A UTF-8 byte-order mark
at the start of a file (as Windows editors save) is skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import datasets

__all__ = ["load_prompt_dataset", "LoadReport", "get_load_report", "SCHEMAS"]

SCHEMAS = ("eurus", "gsm8k", "math", "plain")
_REPORT_KEY = "spro_load_report"
_MAX_WARNINGS = 20


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_prompt_dataset` did. ``bad_rows`` holds ``(line or row number, 1-based, reason)``."""

    source: str
    schema: str
    rows_read: int
    rows_kept: int
    bad_rows: list[tuple[int, str]]
    rule: str
    split: str | None = None  # the split read; None for a source without splits (a single file)

    @property
    def n_bad(self) -> int:
        return len(self.bad_rows)

    def to_json(self) -> str:
        return json.dumps({_REPORT_KEY: dataclasses.asdict(self)})


def get_load_report(ds: datasets.Dataset) -> LoadReport | None:
    """The :class:`LoadReport` stored in a dataset made by :func:`load_prompt_dataset`, or None."""
    desc = getattr(ds.info, "description", None) or ""
    try:
        d = json.loads(desc)[_REPORT_KEY]
    except (ValueError, KeyError, TypeError):
        return None
    d["bad_rows"] = [tuple(x) for x in d["bad_rows"]]
    return LoadReport(**d)


class _BadRow(Exception):
    pass


# ------------------------------------------------------------------------------------------
# Reading raw rows
# ------------------------------------------------------------------------------------------
_BOM = b"\xef\xbb\xbf"


class _Line(int):
    """A position that is a line number of a text file (reported as ``line N``; other positions as ``row N``)."""


def _where(pos: int) -> str:
    return f"line {pos}" if isinstance(pos, _Line) else f"row {pos}"


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number, row or None, problem) per non-blank line; decode errors are per line; a UTF-8 BOM at
    the start is skipped."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            lineno = _Line(n)
            if n == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield lineno, None, f"not valid UTF-8 ({e.reason} at byte {e.start})"
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield lineno, None, f"invalid JSON ({e.msg})"
                continue
            if not isinstance(row, dict):
                yield lineno, None, f"a JSON {type(row).__name__}, not an object"
            else:
                yield lineno, row, None


def _read_json(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        stripped = text.lstrip()
        if stripped.startswith("["):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: invalid JSON: {e}") from None
            for i, row in enumerate(data, 1):
                yield (i, row, None) if isinstance(row, dict) else (i, None, "not a JSON object")
            return
        if stripped.startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                data = None  # probably JSON lines in a .json file
            if isinstance(data, dict):
                rows = next((v for k, v in data.items() if k in ("data", "rows", "train") and isinstance(v, list)), None)
                if rows is None:
                    rows = [data]
                for i, row in enumerate(rows, 1):
                    yield (i, row, None) if isinstance(row, dict) else (i, None, "not a JSON object")
                return
    yield from _read_jsonl(path)


def _read_csv(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """Yield (line number where the record starts, row or None, problem) per record (a BOM is skipped)."""
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            # the line the record ends on, less the line breaks inside its quoted values
            lineno = _Line(reader.line_num - sum(v.count("\n") for v in row.values() if isinstance(v, str)))
            bad = [k for k, v in row.items() if isinstance(v, str) and re.search("[\udc80-\udcff]", v)]
            if bad:
                yield lineno, None, f"not valid UTF-8 in column(s) {', '.join(map(str, bad))}"
            else:
                yield lineno, {k: v for k, v in row.items() if k is not None}, None


def _read_hf(ds: Any, split: str | None, where: str) -> tuple[Iterator[tuple[int, dict | None, str | None]], str | None]:
    """Rows of a Dataset, or of the split ``split`` of a DatasetDict; and the split read (None: no splits)."""
    if isinstance(ds, (datasets.DatasetDict, dict)):
        if split is None:
            raise ValueError(f"{where} has the splits {', '.join(ds.keys())}; name the one to read")
        if split not in ds:
            raise ValueError(f"{where}: no split {split!r}; available splits: {', '.join(ds.keys())}")
        ds, read = ds[split], split
    else:
        read = None
    return ((i, row, None) for i, row in enumerate(ds, 1)), read


def _raw_rows(source: str | os.PathLike, split: str | None
              ) -> tuple[Iterator[tuple[int, dict | None, str | None]], str, str | None]:
    """(rows, where, the split read or None for a source without splits)."""
    path = Path(source)
    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists() or (path / "state.json").exists():
            rows, read = _read_hf(datasets.load_from_disk(str(path)), split, str(path))
            return rows, str(path), read
        raise ValueError(f"{path}: a folder that is not a saved dataset (no dataset_info.json / dataset_dict.json)")
    if path.is_file():
        suf = path.suffix.lower()
        readers = {".jsonl": _read_jsonl, ".json": _read_json, ".csv": _read_csv}
        if suf in readers:
            return readers[suf](path), str(path), None
        if suf == ".parquet":
            rows, _ = _read_hf(datasets.Dataset.from_parquet(str(path)), split, str(path))
            return rows, str(path), None
        raise ValueError(f"{path}: unsupported file type {suf!r} (use .jsonl, .json, .parquet or .csv)")
    s = str(source)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", s) and not Path(s).suffix:
        try:
            ds = datasets.load_dataset(s, split=split)
        except Exception as e:
            raise ValueError(f"{s!r} is not a local file or folder, and loading it from the Hugging Face Hub "
                             f"failed ({type(e).__name__}: {e})") from e
        rows, read = _read_hf(ds, split, s)
        return rows, s, read or split
    raise ValueError(f"dataset file not found: {s}")


# ------------------------------------------------------------------------------------------
# Schemas
# ------------------------------------------------------------------------------------------
def _get(row: Mapping[str, Any], name: str) -> Any:
    """Row value by column name; dotted names reach into nested dicts (or JSON strings)."""
    if name in row:
        return row[name]
    cur: Any = row
    for part in name.split("."):
        if isinstance(cur, str):
            try:
                cur = json.loads(cur)
            except ValueError:
                return None
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _has(columns: set[str], sample: Mapping[str, Any] | None, name: str) -> bool:
    if name in columns:
        return True
    head = name.split(".", 1)[0]
    return head in columns and sample is not None and _get(sample, name) is not None


def _detect(columns: set[str], sample: Mapping[str, Any] | None) -> str | None:
    if "prompt" in columns and _has(columns, sample, "reward_model.ground_truth"):
        return "eurus"
    if "question" in columns and "answer" in columns:
        return "gsm8k"
    if "problem" in columns and ("solution" in columns or "answer" in columns):
        return "math"
    if "prompt" in columns and "answer" in columns:
        return "plain"
    return None


_REQUIRED = {
    "eurus": ["prompt", "reward_model.ground_truth"],
    "gsm8k": ["question", "answer"],
    "math": ["problem", "solution|answer"],
    "plain": ["prompt", "answer"],
}


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip()) or (isinstance(v, (list, dict)) and not v)


def _check_prompt(p: Any) -> Any:
    if _empty(p):
        raise _BadRow("empty or missing prompt")
    if isinstance(p, str):
        return p
    if isinstance(p, list) and all(isinstance(m, Mapping) and "role" in m and "content" in m for m in p):
        if all(_empty(m["content"]) for m in p):
            raise _BadRow("chat prompt with no content")
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in p]
    if isinstance(p, (int, float)):
        return str(p)
    raise _BadRow(f"prompt is neither a string nor chat messages ({type(p).__name__})")


def _answer_str(a: Any) -> str:
    if _empty(a):
        raise _BadRow("empty or missing answer")
    if isinstance(a, (dict, list)):
        return json.dumps(a, ensure_ascii=False)
    if isinstance(a, float) and a.is_integer():
        return str(int(a))
    return str(a).strip()


def _gsm8k_answer(a: Any) -> tuple[str, str]:
    s = _answer_str(a)
    if "####" not in s:
        raise _BadRow("GSM8K answer without '#### <number>'")
    sol, final = s.rsplit("####", 1)
    final = final.strip().replace(",", "").rstrip(".")
    if not final:
        raise _BadRow("GSM8K answer with nothing after '####'")
    return final, sol.strip()


def _math_answer(row: Mapping[str, Any]) -> str:
    from spro.rewards.math import extract_boxed

    a = row.get("answer")
    if not _empty(a):
        return _answer_str(a)
    sol = row.get("solution")
    if _empty(sol):
        raise _BadRow("MATH row with neither 'answer' nor 'solution'")
    b = extract_boxed(str(sol))
    if not b:
        raise _BadRow("no \\boxed{} answer in the solution")
    return b


def _apply_template(prompt: Any, template: str | None, row: Mapping[str, Any]) -> Any:
    if template is None:
        return prompt
    fields = {k: v for k, v in row.items() if isinstance(v, (str, int, float))}

    def fill(text: str) -> str:
        try:
            return template.format(**{**fields, "prompt": text, "question": text})
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"prompt_template {template!r} cannot be filled: {type(e).__name__}: {e} "
                             "(use {prompt} for the prompt text and double braces {{}} for literal braces)") from None

    if isinstance(prompt, str):
        return fill(prompt)
    msgs = [dict(m) for m in prompt]
    for m in reversed(msgs):
        if m["role"] == "user":
            m["content"] = fill(m["content"])
            break
    return msgs


def _convert(row: Mapping[str, Any], schema: str, template: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if schema == "eurus":
        out["prompt"] = _check_prompt(row.get("prompt"))
        out["answer"] = _answer_str(_get(row, "reward_model.ground_truth"))
        skip = {"prompt"}
    elif schema == "gsm8k":
        out["prompt"] = _check_prompt(row.get("question"))
        out["answer"], out["solution"] = _gsm8k_answer(row.get("answer"))
        skip = {"question", "answer"}
    elif schema == "math":
        out["prompt"] = _check_prompt(row.get("problem"))
        out["answer"] = _math_answer(row)
        skip = {"problem", "answer"}
    else:
        out["prompt"] = _check_prompt(row.get("prompt"))
        out["answer"] = _answer_str(row.get("answer"))
        skip = {"prompt", "answer"}
    out["prompt"] = _apply_template(out["prompt"], template, row)
    for k, v in row.items():
        if k in skip or k in out:
            continue
        out[k] = json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v
    return out


def load_prompt_dataset(
    source: str | os.PathLike,
    *,
    schema: Literal["auto", "eurus", "gsm8k", "math", "plain"] = "auto",
    column_map: Mapping[str, str] | None = None,
    split: str | None = "train",
    prompt_template: str | None = None,
    on_bad_row: Literal["drop", "keep", "error"] = "drop",
    limit: int | None = None,
) -> datasets.Dataset:
    """Load prompts and ground-truth answers (see the module docstring for formats and rules).

    Args:
        source: a file (.jsonl/.json/.parquet/.csv), a ``save_to_disk`` folder, or a Hub id.
        schema: "auto" or one of ``SCHEMAS``.
        column_map: for each column spro needs (``prompt``, ``answer``), the source column that holds it
            (dotted for nested fields): ``{"prompt": "instruction", "answer": "reward_model.ground_truth"}``.
        split: split to take from a DatasetDict or the Hub (ignored for single files; the
            :class:`LoadReport` records the split read, None for a source without splits). None: the
            source must have no splits (a source with splits raises, naming them).
        prompt_template: e.g. ``"{prompt}\\nPut the final answer in \\\\boxed{{}}."``; ``{prompt}``
            (or ``{question}``) is the prompt text, other ``{column}`` names are row fields; for
            chat prompts it applies to the last user message.
        on_bad_row: "drop" (default), "keep" (answer None) or "error".
        limit: keep at most this many good rows.

    Returns: a ``datasets.Dataset``; :func:`get_load_report` gives the :class:`LoadReport`.

    Raises: ValueError for a missing file, an unknown schema, or a source without the needed
        columns (the message names the source and the columns it has).
    """
    if schema not in ("auto",) + SCHEMAS:
        raise ValueError(f"unknown schema {schema!r}; choose from auto, {', '.join(SCHEMAS)}")
    if on_bad_row not in ("drop", "keep", "error"):
        raise ValueError(f"on_bad_row must be 'drop', 'keep' or 'error', got {on_bad_row!r}")
    rows_iter, where, split_read = _raw_rows(source, split)
    raw = list(rows_iter)
    good_rows = [r for _, r, _ in raw if r is not None]
    columns: set[str] = set()
    for r in good_rows[:100]:
        columns |= set(r)
    if not raw:
        raise ValueError(f"{where}: no rows")
    if column_map:
        missing = [src for src in column_map.values() if not _has(columns, good_rows[0] if good_rows else None, src)]
        if missing:
            raise ValueError(f"{where}: column(s) {missing} from column_map not found; "
                             f"columns found: {sorted(columns)}")
        mapped = []
        for r in good_rows:
            m = dict(r)
            for ours, src in column_map.items():
                m[ours] = _get(r, src)
            mapped.append(m)
        remap = dict(zip(map(id, good_rows), mapped))
        raw = [(i, remap[id(r)] if r is not None else None, p) for i, r, p in raw]
        columns |= set(column_map)
        if schema == "auto":
            schema = "plain"
    sample = next((r for _, r, _ in raw if r is not None), None)
    if schema == "auto":
        detected = _detect(columns, sample)
        if detected is None:
            raise ValueError(
                f"{where}: cannot tell the schema from the columns {sorted(columns)}; expected one of "
                "eurus (prompt, reward_model.ground_truth), gsm8k (question, answer), math (problem, "
                "solution), plain (prompt, answer), or give column_map={'prompt': ..., 'answer': ...}"
            )
        schema = detected  # type: ignore[assignment]
    else:
        need = _REQUIRED[schema]
        missing = [n for n in need if not any(_has(columns, sample, alt) for alt in n.split("|"))]
        if missing:
            raise ValueError(f"{where}: schema {schema!r} needs column(s) {missing}; columns found: {sorted(columns)}")

    out: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for idx, row, problem in raw:
        if limit is not None and len(out) >= limit:
            break
        if row is not None:
            try:
                out.append(_convert(row, schema, prompt_template))
                continue
            except _BadRow as e:
                problem = str(e)
        assert problem is not None
        if on_bad_row == "error":
            raise ValueError(f"{where}: {_where(idx)}: {problem}")
        bad.append((int(idx), problem))
        if len(bad) <= _MAX_WARNINGS:
            warnings.warn(f"{where}: {_where(idx)}: {problem}; "
                          + ("dropped" if on_bad_row == "drop" else "kept with answer None"), stacklevel=2)
        if on_bad_row == "keep":
            kept: dict[str, Any] = {"prompt": "", "answer": None}
            if row is not None:
                try:
                    kept["prompt"] = _apply_template(_check_prompt(row.get({"gsm8k": "question", "math": "problem"}.get(schema, "prompt"))), prompt_template, row)
                except (_BadRow, ValueError):
                    pass
            out.append(kept)
    if len(bad) > _MAX_WARNINGS:
        warnings.warn(f"{where}: {len(bad)} bad rows in all (first {_MAX_WARNINGS} listed above)", stacklevel=2)
    if not out:
        raise ValueError(f"{where}: no usable rows ({len(bad)} bad rows; first: {bad[:3]})")
    default_source = schema if schema != "plain" else Path(str(source)).stem
    for r in out:
        if _empty(r.get("data_source")):
            r["data_source"] = default_source
    report = LoadReport(source=where, schema=schema, rows_read=len(raw), rows_kept=len(out), bad_rows=bad,
                        rule={"drop": "bad rows dropped", "keep": "bad rows kept with answer None",
                              "error": "bad rows raise"}[on_bad_row], split=split_read)
    ds = _to_dataset(out)
    ds.info.description = report.to_json()
    return ds


def _to_dataset(rows: list[dict[str, Any]]) -> datasets.Dataset:
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    data = {k: [r.get(k) for r in rows] for k in keys}
    prompts = data["prompt"]
    if any(isinstance(p, list) for p in prompts) and any(isinstance(p, str) for p in prompts):
        data["prompt"] = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    try:
        return datasets.Dataset.from_dict(data)
    except Exception:
        # Mixed types in a passed-through column: store that column as JSON text.
        for k in keys:
            if k in ("prompt", "answer"):
                continue
            vals = data[k]
            if len({type(v) for v in vals if v is not None}) > 1 or any(isinstance(v, (list, dict)) for v in vals):
                data[k] = [None if v is None else (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
                           for v in vals]
        return datasets.Dataset.from_dict(data)
