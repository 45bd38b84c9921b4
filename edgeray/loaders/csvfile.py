"""Reading a user's market CSV: one clear message for a file that cannot be read at all, and the
good rows of a partly garbled one (each bad line reported with its line number and reason).

Formats for bars (`detect_bars`):
- edgeray / generic OHLCV: a timestamp column (event_ts, timestamp, time, ts, datetime, date) with
  ISO text or epoch numbers (unit by magnitude, or given), then open, high, low, close[, volume];
- exchange kline (Binance and alike): open_time in epoch milliseconds, open, high, low, close,
  volume, close_time, ...; with a header or without one (12 numeric columns).
A `columns` mapping (FILE_COLUMN -> FIELD) is applied first.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

TS_CANDIDATES = ("event_ts", "timestamp", "open_time", "time", "ts", "datetime", "date", "time_stamp", "opentime")
REQUIRED = ("open", "high", "low", "close")
OPTIONAL = ("volume", "bid", "ask")
ALIASES = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vol": "volume", "last": "close"}
KLINE_HEADERLESS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume", "count",
                    "taker_buy_volume", "taker_buy_quote_volume", "ignore")
EXPECTED = "event_ts (or timestamp/open_time/time/ts/datetime/date), open, high, low, close[, volume]"
MAP_HINT = "name the columns with --map FILE_COLUMN=FIELD (e.g. --map Date=event_ts) or `columns:` in the source config"


class SourceError(ValueError):
    """A source file that cannot be replayed; the message names the file and what is wrong."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


@dataclass
class CsvText:
    header: list[str]
    text: str                     # header + the good lines, for pandas
    bad: list[dict] = field(default_factory=list)   # {line, reason, raw}
    headerless: bool = False
    good_lines: list[int] = field(default_factory=list)  # the file's line number of each good row


def _norm(name: str) -> str:
    return name.strip().strip('"').lower().replace(" ", "_")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_lines(path: str | Path, expected: str = EXPECTED) -> CsvText:
    """The file's header and good lines; each line that cannot be read is in `bad` with its line number and
    reason (`expected` names the columns a reader wants, for the messages about a file that is no CSV)."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file", "check the path (relative paths in a config are read from the config's folder)")
    if path.is_dir():
        raise SourceError(f"{path}: is a folder, expected a CSV file")
    data = path.read_bytes()
    name = path.name
    if not data.strip():
        raise SourceError(f"{name}: the file is empty; expected a header line and rows: {expected}")
    if data.startswith(b"PAR1"):
        raise SourceError(f"{name}: a parquet file; give it a .parquet name to read it as parquet")
    lines = data.split(b"\n")
    offset = 0
    header_raw = lines[0].rstrip(b"\r")
    try:
        header_text = header_raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{name}: not a text CSV: byte 0x{header_raw[exc.start]:02x} at byte offset {exc.start} (line 1) is not UTF-8",
                          f"expected a CSV with a header line: {expected}") from None
    if "\x00" in header_text:
        raise SourceError(f"{name}: not a text CSV: NUL byte at byte offset {header_raw.index(bytes(1))} (line 1)",
                          f"expected a CSV with a header line: {expected}")
    header = next(csv.reader([header_text]), [])
    headerless = len(header) >= 6 and all(_is_number(h) for h in header)
    n = len(header)
    good: list[str] = []
    good_lines: list[int] = []
    bad: list[dict] = []
    body = lines if headerless else lines[1:]
    if not headerless:
        offset = len(lines[0]) + 1
    for i, raw in enumerate(body, start=1 if headerless else 2):
        start = offset
        offset += len(raw) + 1
        raw = raw.rstrip(b"\r")
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append({"line": i, "reason": f"byte 0x{raw[exc.start]:02x} at byte offset {start + exc.start} is not UTF-8",
                        "raw": raw.decode("utf-8", "replace")})
            continue
        if "\x00" in text:
            bad.append({"line": i, "reason": f"NUL byte at byte offset {start + text.index(chr(0))}", "raw": text.replace("\x00", "\\0")})
            continue
        try:
            fields = next(csv.reader([text]))
        except csv.Error as exc:
            bad.append({"line": i, "reason": f"unparseable CSV ({exc})", "raw": text})
            continue
        if len(fields) != n:
            bad.append({"line": i, "reason": f"{len(fields)} fields, the header has {n}", "raw": text})
            continue
        good.append(text)
        good_lines.append(i)
    if not good:
        if bad:
            b = bad[0]
            raise SourceError(f"{name}: none of its {len(bad):,} data lines can be read (line {b['line']}: {b['reason']}); is it a CSV file?",
                              f"expected: {expected}")
        raise SourceError(f"{name}: a header but no rows (header: {', '.join(header)})")
    if len(bad) > max(len(good), 10) and len(bad) > 0.5 * (len(good) + len(bad)):
        b = bad[0]
        raise SourceError(f"{name}: {len(bad):,} of {len(bad) + len(good):,} lines cannot be read (first: line {b['line']}: {b['reason']}); "
                          "is it a text CSV?", f"expected: {expected}")
    if headerless:
        header = list(KLINE_HEADERLESS[:n]) + [f"col{j}" for j in range(len(KLINE_HEADERLESS), n)]
        head = ",".join(header)
    else:
        head = header_text
    return CsvText(header, head + "\n" + "\n".join(good) + "\n", bad, headerless, good_lines)


def bad_lines_frame(bad: list[dict], path: str | Path) -> pd.DataFrame:
    """Unreadable lines in the dead-letter store's shape (reason `unreadable_line`, field `line N`)."""
    import json

    return pd.DataFrame({"row": [b["line"] for b in bad], "reason": "unreadable_line",
                         "field": [f"line {b['line']}" for b in bad], "value": [b["reason"] for b in bad],
                         "raw": [json.dumps({"file": str(path), "line": b["line"], "text": b["raw"][:2000]}) for b in bad]})


def _epoch_unit(values: pd.Series) -> str | None:
    """s/ms/us/ns from the magnitude of numeric timestamps; None for text (ISO)."""
    sample = values.dropna().astype(str).str.strip().head(50)
    nums = pd.to_numeric(sample, errors="coerce")
    if not len(sample) or nums.isna().mean() > 0.5:
        return None
    mag = float(np.nanmedian(np.abs(nums)))
    return "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"


def _epoch_to_iso(values: pd.Series, unit: str) -> pd.Series:
    """Numeric values to ISO text; anything else is left as it is, for ingestion to dead-letter."""
    text = values.astype(object)
    nums = pd.to_numeric(values, errors="coerce")
    ok = nums.notna() & np.isfinite(nums)
    out = text.copy()
    if ok.any():
        stamps = pd.to_datetime(nums[ok].astype("int64") if unit != "s" else nums[ok], unit=unit, utc=True, errors="coerce")
        conv = stamps.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out[ok] = conv.where(stamps.notna(), text[ok])
    return out


def load_bars_csv(path: str | Path, columns: dict[str, str] | None = None, fmt: str = "auto",
                  ts_unit: str = "auto") -> tuple[pd.DataFrame, str, list[dict]]:
    """(frame with event_ts/open/high/low/close[/volume], what was detected, bad lines)."""
    path = Path(path)
    name = path.name
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        header, bad, headerless, text = list(frame.columns), [], False, None
    else:
        parsed = read_lines(path)
        header, bad, headerless, text = parsed.header, parsed.bad, parsed.headerless, parsed.text
    found = [h.strip() for h in header]
    norm = {_norm(h): h for h in found}
    rename: dict[str, str] = {}
    for src, dst in (columns or {}).items():
        key = _norm(src)
        if key not in norm:
            raise SourceError(f"{name}: no column {src!r} to map to {dst!r}; found: {', '.join(found)}", MAP_HINT)
        rename[norm[key]] = dst
    targets = set(rename.values())
    notes = [f"{s} -> {d}" for s, d in rename.items()]
    ts_col = next((s for s, d in rename.items() if d == "event_ts"), None)
    kind = "mapped columns" if rename else None
    if ts_col is None:
        if fmt == "kline" and "open_time" not in norm:
            raise SourceError(f"{name}: --format kline needs an open_time column; found: {', '.join(found)}", MAP_HINT)
        kline = fmt == "kline" or (fmt == "auto" and "open_time" in norm and "event_ts" not in norm)
        pick = "open_time" if kline else next((c for c in TS_CANDIDATES if c in norm and norm[c] not in rename), None)
        if pick is None:
            raise SourceError(f"{name}: no column event_ts (or timestamp/open_time/time/ts/datetime/date); found: {', '.join(found)}",
                              MAP_HINT)
        ts_col = norm[pick]
        if ts_col != "event_ts":
            rename[ts_col] = "event_ts"
        kind = "exchange kline format" if kline else ("edgeray bar format" if pick == "event_ts" else "OHLCV format")
        if headerless:
            kind = "exchange kline format (no header)"
    for h in found:
        key = _norm(h)
        field = ALIASES.get(key, key)
        if h not in rename and field in REQUIRED + OPTIONAL and field not in targets and field not in rename.values():
            if h != field:
                rename[h] = field
    have = set(rename.get(h, h) for h in found)
    missing = [c for c in REQUIRED if c not in have]
    if missing:
        raise SourceError(f"{name}: no column {', '.join(missing)}; expected {EXPECTED}; found: {', '.join(found)}", MAP_HINT)
    if text is not None:
        frame = pd.read_csv(io.StringIO(text), dtype={ts_col: str}, skipinitialspace=True)
        frame.columns = [c.strip() for c in frame.columns]
    frame = frame.rename(columns=rename)
    frame = frame.loc[:, ~frame.columns.duplicated()]
    unit = None if ts_unit == "iso" else ts_unit if ts_unit != "auto" else _epoch_unit(frame["event_ts"])
    if unit:
        frame["event_ts"] = _epoch_to_iso(frame["event_ts"], unit)
    others = ", ".join(f"{s} -> {d}" for s, d in rename.items() if s != ts_col)
    arrow = "" if ts_col == "event_ts" else " -> event_ts"
    detected = f"{kind}: {ts_col} ({unit or 'ISO'}){arrow}" + (f"; {others}" if others else "")
    return frame, detected, bad
