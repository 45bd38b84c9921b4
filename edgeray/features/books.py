"""Odds features across books: per game, the latest price of every book and what they say together.

`MultiBookOddsState.update(quotes)` takes OddsQuote rows (any number of games and books, one micro-batch or a
whole file) and returns one feature row per quote, in event-time order. A row's features are the state after
applying every quote up to and including it in event-time order (ties in arrival order), so they use only
quotes stamped at or before the row's `event_ts`, and splitting a stream into batches anywhere does not
change them.

Definitions (margin method: multiplicative, i.e. each book's fair p_a = (1/d_a) / (1/d_a + 1/d_b)):
- consensus_prob_a: the mean over the game's current books of each book's fair p_a (consensus_prob_b = 1 - it);
- book_dispersion: the population std (ddof=0) of those fair p_a (0 with one book);
- best_decimal_a / best_book_a: the highest current decimal price for side a and the book offering it (ties:
  the book first seen in the stream); likewise b; best_overround = 1/best_a + 1/best_b - 1 (< 0: an arbitrage);
- book_move_a (the row's own book): its fair p_a minus its opening fair p_a (the quote flagged `is_open`, else
  its first usable quote); mean_book_move_a: the mean of that over the game's current books;
- consensus_move_a: consensus_prob_a minus the game's first consensus;
- consensus_edge_a: consensus_prob_a * best_decimal_a - 1, the expected return of a unit stake at the best
  price if the consensus is right (the value strategy's signal, edgeray.value).
A quote whose overround exceeds `max_overround` (the stream has -10000/-10000 placeholders a book posts when
it takes a game off the board) takes that book out of the game until its next usable quote.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from edgeray.watermark import timestamps_ns

METHOD = "multiplicative"
# Float features per game, for the Feast view keyed by game_id (NaN where a game has no usable book yet).
NAMES = ["consensus_prob_a", "consensus_prob_b", "book_dispersion", "n_books", "best_decimal_a", "best_decimal_b",
         "best_overround", "consensus_move_a", "mean_book_move_a", "consensus_edge_a", "consensus_edge_b"]
# Per-row extras: the quoting book's own view, and who holds the best prices (strings, not for Feast).
EXTRA = ["bookmaker", "book_prob_a_fair", "book_move_a", "best_book_a", "best_fair_a", "best_book_b", "best_fair_b"]
COLUMNS = ["symbol", "event_ts", *NAMES, *EXTRA]
_TEXT = {"symbol", "bookmaker", "best_book_a", "best_book_b"}

_OFF = -1.0  # a book that took the game off the board (NaN in the state means "never quoted")
_NO_TS = np.iinfo(np.int64).min


event_ns = timestamps_ns  # timestamps (tz-aware, naive = UTC, ISO text) as int64 ns since the epoch


def quote_decimals(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(decimal a, decimal b): the validated decimal columns when present, else from the American prices;
    NaN where a price is missing or impossible (|american| < 100), never an exception mid-stream."""
    out = []
    for side in ("a", "b"):
        dec = frame[f"odds_{side}_decimal"].to_numpy(float) if f"odds_{side}_decimal" in frame else None
        am = pd.to_numeric(frame[f"odds_{side}_american"], errors="coerce").to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            derived = np.where(am >= 100, 1 + am / 100, np.where(am <= -100, 1 + 100 / np.abs(am), np.nan))
        out.append(derived if dec is None else np.where(np.isfinite(dec), dec, derived))
    return out[0], out[1]


class MultiBookOddsState:
    """Streaming state: per game and book the latest decimal prices, fair p_a and opening fair p_a."""

    def __init__(self, max_overround: float = 0.15) -> None:
        self.max_overround = max_overround
        self._games: dict[str, int] = {}
        self._books: dict[str, int] = {}
        self._latest = np.full((0, 0, 3), np.nan)  # (game, book, [fair_a, dec_a, dec_b]); _OFF = off the board
        self._open = np.full((0, 0), np.nan)        # (game, book) opening fair p_a
        self._last_ts = np.full((0, 0), _NO_TS, dtype=np.int64)
        self._first_cons = np.full(0, np.nan)       # (game,) the first consensus p_a
        self.stale = 0      # quotes older than their book's latest one (late after ingestion): not applied
        self.off_board = 0  # quotes over max_overround

    # -- bookkeeping -------------------------------------------------------------------------------------
    @staticmethod
    def _ids(index: dict[str, int], keys: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
        # New keys get ids in order of first appearance, so a book's id (the best-price tie-break) is the
        # order it was first seen in the stream, not its name's order within one batch.
        first = np.full(len(uniq), len(keys))
        np.minimum.at(first, inverse, np.arange(len(keys)))
        for j in np.argsort(first, kind="stable"):
            index.setdefault(str(uniq[j]), len(index))
        return np.array([index[str(u)] for u in uniq], dtype=np.int64)[inverse]

    def _grow(self) -> None:
        g, b = len(self._games), len(self._books)
        og, ob = self._open.shape
        if (g, b) == (og, ob):
            return
        latest = np.full((g, b, 3), np.nan)
        latest[:og, :ob] = self._latest
        opened = np.full((g, b), np.nan)
        opened[:og, :ob] = self._open
        last = np.full((g, b), _NO_TS, dtype=np.int64)
        last[:og, :ob] = self._last_ts
        first = np.full(g, np.nan)
        first[:og] = self._first_cons
        self._latest, self._open, self._last_ts, self._first_cons = latest, opened, last, first

    @property
    def books(self) -> list[str]:
        return sorted(self._books, key=self._books.get)

    # -- the update --------------------------------------------------------------------------------------
    def update(self, frame: pd.DataFrame) -> pd.DataFrame:
        n = len(frame)
        if n == 0:
            return pd.DataFrame({c: pd.Series([], dtype=object if c in _TEXT else "datetime64[ns, UTC]"
                                              if c == "event_ts" else float) for c in COLUMNS})
        ts_all = event_ns(frame["event_ts"])
        order = np.argsort(ts_all, kind="stable")
        ts = ts_all[order]
        dec_a, dec_b = (d[order] for d in quote_decimals(frame))
        is_open = (frame["is_open"].to_numpy(bool) if "is_open" in frame else np.zeros(n, bool))[order]
        sym = frame["symbol"].to_numpy(object)[order]
        bookname = frame["bookmaker"].to_numpy(object)[order]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_a, inv_b = 1.0 / dec_a, 1.0 / dec_b
            fair_a = inv_a / (inv_a + inv_b)
            over = inv_a + inv_b - 1.0
        usable = np.isfinite(dec_a) & np.isfinite(dec_b) & (dec_a > 1) & (dec_b > 1)
        valid = usable & (over <= self.max_overround)
        self.off_board += int((usable & ~valid).sum())

        gi = self._ids(self._games, sym)
        bi = self._ids(self._books, bookname)
        self._grow()
        nb = len(self._books)
        apply = ts >= self._last_ts[gi, bi]
        self.stale += int((~apply).sum())

        # One seed row per game (its state before this batch) followed by its quotes in event-time order;
        # each quote writes its book's cells and a per-game forward fill carries every book's latest price.
        games = np.unique(gi)
        key = np.concatenate([games, gi])
        sub = np.concatenate([np.full(len(games), -1), np.arange(n)])
        comb = np.lexsort((sub, key))
        pos = np.empty_like(comb)
        pos[comb] = np.arange(len(comb))
        seed_pos, row_pos = pos[:len(games)], pos[len(games):]
        grp = key[comb]

        x = np.full((len(comb), 4 * nb), np.nan)
        x[seed_pos, :3 * nb] = self._latest[games].transpose(0, 2, 1).reshape(len(games), 3 * nb)
        x[seed_pos, 3 * nb:] = self._open[games]
        r, b = row_pos[apply], bi[apply]
        ok = valid[apply]
        x[r, b] = np.where(ok, fair_a[apply], _OFF)
        x[r, nb + b] = np.where(ok, dec_a[apply], _OFF)
        x[r, 2 * nb + b] = np.where(ok, dec_b[apply], _OFF)
        # The open: a quote flagged is_open, or the first usable quote of a book that has none yet.
        pair = gi * nb + bi
        cand = apply & valid
        first_usable = np.zeros(n, bool)
        first_usable[np.flatnonzero(cand)[~pd.Series(pair[cand]).duplicated().to_numpy()]] = True
        sets_open = cand & (is_open | (first_usable & np.isnan(self._open[gi, bi])))
        x[row_pos[sets_open], 3 * nb + bi[sets_open]] = fair_a[sets_open]

        filled = pd.DataFrame(x).groupby(grp, sort=False).ffill().to_numpy()
        rows = filled[row_pos]
        cur = np.where(rows[:, :3 * nb] == _OFF, np.nan, rows[:, :3 * nb])
        fair_m, dec_am, dec_bm, open_m = cur[:, :nb], cur[:, nb:2 * nb], cur[:, 2 * nb:], rows[:, 3 * nb:]

        n_books = np.isfinite(fair_m).sum(axis=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no usable book yet) give NaN
            cons_a = np.nanmean(fair_m, axis=1)
            disp = np.nanstd(fair_m, axis=1)
            mean_move = np.nanmean(fair_m - open_m, axis=1)
        names = np.array(self.books + [""], dtype=object)
        best = {}
        idx_rows = np.arange(n)
        for side, dm in (("a", dec_am), ("b", dec_bm)):
            j = np.where(np.isnan(dm), -np.inf, dm).argmax(axis=1)
            have = n_books > 0
            best[side] = (np.where(have, dm[idx_rows, j], np.nan), names[np.where(have, j, nb)],
                          np.where(have, fair_m[idx_rows, j], np.nan))
        fair_b_best = 1.0 - best["b"][2]

        # The game's first consensus: the state's, else the first row of the game that has one.
        c = np.full(len(comb), np.nan)
        c[seed_pos] = self._first_cons[games]
        c[row_pos] = cons_a
        known = pd.Series(~np.isnan(c))
        is_first = (known.groupby(grp, sort=False).cumsum() == 1) & known
        firsts = pd.Series(np.where(is_first, c, np.nan)).groupby(grp, sort=False).ffill().to_numpy()

        # Carry the state: each game's last combined row, every book's last applied stamp.
        last = np.flatnonzero(np.r_[grp[1:] != grp[:-1], True])
        last_games = grp[last]
        self._latest[last_games] = filled[last, :3 * nb].reshape(len(last), 3, nb).transpose(0, 2, 1)
        self._open[last_games] = filled[last, 3 * nb:]
        self._first_cons[last_games] = firsts[last]
        np.maximum.at(self._last_ts, (gi[apply], bi[apply]), ts[apply])

        own = apply & valid
        book_fair = np.where(own, fair_a, np.nan)
        book_open = open_m[np.arange(n), bi]
        best_a, best_b = best["a"][0], best["b"][0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = {
                "symbol": sym, "event_ts": pd.to_datetime(ts, utc=True),
                "consensus_prob_a": cons_a, "consensus_prob_b": 1.0 - cons_a, "book_dispersion": disp,
                "n_books": n_books.astype(float), "best_decimal_a": best_a, "best_decimal_b": best_b,
                "best_overround": 1.0 / best_a + 1.0 / best_b - 1.0,
                "consensus_move_a": cons_a - firsts[row_pos], "mean_book_move_a": mean_move,
                "consensus_edge_a": cons_a * best_a - 1.0, "consensus_edge_b": (1.0 - cons_a) * best_b - 1.0,
                "bookmaker": bookname, "book_prob_a_fair": book_fair, "book_move_a": book_fair - book_open,
                "best_book_a": best["a"][1], "best_fair_a": best["a"][2],
                "best_book_b": best["b"][1], "best_fair_b": fair_b_best,
            }
        return pd.DataFrame(out, columns=COLUMNS)

    def snapshot(self) -> pd.DataFrame:
        """Every (game, book) quoted so far: its latest usable decimal prices and fair p_a (NaN when its latest
        quote took the game off the board) and its opening fair p_a. After a game's last pre-game quote this
        is each book's closing line."""
        g, b = np.nonzero(np.isfinite(self._latest[:, :, 0]))
        cur = np.where(self._latest[g, b] == _OFF, np.nan, self._latest[g, b])
        games = np.array(sorted(self._games, key=self._games.get), dtype=object)
        books = np.array(self.books, dtype=object)
        return pd.DataFrame({"symbol": games[g], "bookmaker": books[b], "decimal_a": cur[:, 1],
                             "decimal_b": cur[:, 2], "fair_a": cur[:, 0], "open_fair_a": self._open[g, b]})

    # -- checkpointing -----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"max_overround": self.max_overround, "games": dict(self._games), "books": dict(self._books),
                "latest": self._latest.copy(), "open": self._open.copy(), "last_ts": self._last_ts.copy(),
                "first_cons": self._first_cons.copy(), "stale": self.stale, "off_board": self.off_board}

    def load_state(self, state: dict) -> None:
        self.max_overround = state["max_overround"]
        self._games, self._books = dict(state["games"]), dict(state["books"])
        self._latest, self._open = state["latest"].copy(), state["open"].copy()
        self._last_ts, self._first_cons = state["last_ts"].copy(), state["first_cons"].copy()
        self.stale, self.off_board = state["stale"], state["off_board"]
