"""The shared state store of serving: each user's state, event count, last timestamp and ring of recent events in
Redis, so that any of several serving processes can answer for any user (docs/serving.md, "Shared state").

    store = RedisStateStore("redis://127.0.0.1:6379/0", prefix="t2arec", history_len=200, ttl_s=None)
    version = store.register_model(fingerprint, layout)      # the same model gets the same version in every process
    got = store.read(users, version, local_stamps)            # one round trip: counts, stamps, states, rings
    outcome = store.commit(users, version, expected_stamps, ...)   # one round trip: all users move, or none

This module only stores and checks; `OnlineRecommender` runs the model. Every batch call is one Lua script (one
round trip, executed atomically by Redis), so a batch is applied whole or not at all — also when the calling
process dies in the middle of it.

Key layout under the prefix P (one Redis server and database; docs/serving.md explains each choice):

    P:u:<user>      hash    n = event count, t = last timestamp, w = commit stamp (a random int64 drawn by the
                            observe() call that last moved the user), s:<v> = the packed float32 state for model
                            version v, sw:<v> = the stamp that state belongs to (it is current iff sw:<v> == w)
    P:r:<user>      string  the ring of the last history_len events, 12 bytes each (int32 item, int64 time, little
                            endian); event j (0-based, over all time) at byte 12 * (j % history_len)
    P:pop           zset    zero-padded item id -> -(times observed): ZRANGE 0 k-1 = most observed first, ties by id
    P:models        hash    model fingerprint -> version;   P:layouts  hash  version -> layout JSON
    P:next_version  counter of versions handed out;         P:config   hash  history_len
    P:done:<stamp>  string  marks an applied commit for DONE_TTL_MS, so that a retried commit is never applied twice
    P:user_ids      hash    text user id -> its shared index (raw_ids.UserKeys);   P:next_user_id  counter

Compare-and-set: a commit names, per user, the stamp its new state was computed from (empty for a user it believes
new); the script applies the batch only if every user still carries that stamp. The stamp, not the bare event
count, is compared because a count can come back (a user forgotten or expired by the TTL, then observed again)
while a stamp never repeats.
"""
from __future__ import annotations

import json
import secrets
import urllib.parse
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from t2arec_fast import json_io
from t2arec_fast.errors import InputError, StoreCorruptError, StoreError, StoreUnavailableError

__all__ = ["RedisStateStore", "StoreRead", "CommitOutcome", "RING_RECORD"]

RING_RECORD = np.dtype([("item", "<i4"), ("time", "<i8")])     # packed: 12 bytes per event
assert RING_RECORD.itemsize == 12
INT64_MIN = np.iinfo(np.int64).min
DONE_TTL_MS = 600_000          # how long an applied commit's stamp is remembered (longer than any retry sequence)
_ITEM_DIGITS = 10              # popularity members are zero-padded so that Redis' lexical tie order is numeric
FIELD = 20                     # bytes of one decimal int64 field in a script's argument or reply (19 digits + sign)
_READ_RECORD = np.dtype([("known", "S1"), ("n", f"S{FIELD}"), ("t", f"S{FIELD}"), ("w", f"S{FIELD}"),
                         ("status", "S1"), ("ring", "S1")])        # one user in the read script's reply
_COMMIT_RECORD = np.dtype([("expected", f"S{FIELD}"), ("n", f"S{FIELD}"), ("t", f"S{FIELD}"),
                           ("slot", f"S{FIELD}"), ("records", f"S{FIELD}")])   # one user in the commit's arguments
_POPULAR_RECORD = np.dtype([("member", f"S{_ITEM_DIGITS}"), ("count", f"S{FIELD}")])

# -- Lua scripts: each runs atomically inside Redis; errors name the key -------------------------------------------
# Per-user numbers travel as fixed-width decimal fields (FIELD bytes each, left-aligned, padded with NUL or spaces)
# inside one argument or reply string, and states and ring records as concatenated blobs: a batch of any size is a
# handful of arguments, packed and parsed by numpy on the client instead of hundreds of per-user values. Decimal
# text, not binary, because Lua's numbers are doubles: a 63-bit stamp or an int64 time would not survive them.
_READ = """
-- KEYS: per user: hash, ring; then the popularity zset.  ARGV: 1 state field, 2 state-stamp field,
-- 3 ring mode ('all' | 'missing' | 'none'), 4 top-k of popularity (0: none), 5 bytes per state, 6 bytes per ring
-- (12 * history_len), 7 the caller's local stamp per user (FIELD bytes each; '0': no local copy).
-- Returns {records, states, rings[, top]}: one RECORD-byte record per user: known ('0'/'1'), n, t, w (FIELD bytes
-- each, space-padded), status ('0': no current state here, '1': the caller's copy is current, '2': the state is
-- shipped), ring ('0'/'1'); the shipped states concatenated in user order; the shipped rings zero-padded to the
-- ring size, concatenated in user order.
local size, ringbytes, mine, mode = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[3]
local nu = (#KEYS - 1) / 2
local records, states, rings = {}, {}, {}
local unknown = '0' .. string.rep(' ', 3 * FIELD + 2)
local function pad(x) return x .. string.rep(' ', FIELD - #x) end
for i = 1, nu do
  local h, r = KEYS[2*i-1], KEYS[2*i]
  local v = redis.pcall('HMGET', h, 'n', 't', 'w', ARGV[2])
  if v.err then return redis.error_reply('CORRUPT ' .. h .. ' is not a hash: ' .. v.err) end
  if not v[1] then
    records[i] = unknown
  else
    for j, name in ipairs({'n', 't', 'w'}) do
      if v[j] and #v[j] > FIELD then
        return redis.error_reply('CORRUPT ' .. h .. " field '" .. name .. "' holds " .. #v[j] ..
                                 ' bytes, not an int64')
      end
    end
    local w, status, ring = v[3], '0', '0'
    if w and w == string.match(string.sub(mine, FIELD * (i - 1) + 1, FIELD * i), '^%d+') then
      status = '1'                                -- the caller's copy is current: nothing to ship
    elseif w and v[4] == w then
      local s = redis.call('HGET', h, ARGV[1])
      if not s or #s ~= size then
        return redis.error_reply('CORRUPT ' .. h .. " field '" .. ARGV[1] .. "' holds " .. (s and #s or 0) ..
                                 ' bytes, expected ' .. size .. ' (a state of ' .. size / 4 .. ' float32)')
      end
      status = '2'
      states[#states+1] = s
    end
    if mode == 'all' or (mode == 'missing' and status == '0') then
      local g = redis.pcall('GET', r)
      if type(g) == 'table' then return redis.error_reply('CORRUPT ' .. r .. ' is not a string') end
      g = g or ''
      if #g > ringbytes or #g % 12 ~= 0 then
        return redis.error_reply('CORRUPT ' .. r .. ' holds ' .. #g .. ' bytes: not a ring of at most ' ..
                                 ringbytes / 12 .. ' events of 12 bytes')
      end
      ring = '1'
      rings[#rings+1] = g .. string.rep('\\0', ringbytes - #g)
    end
    records[i] = '1' .. pad(v[1]) .. pad(v[2] or '') .. pad(w or '') .. status .. ring
  end
end
local out = {table.concat(records), table.concat(states), table.concat(rings)}
if ARGV[4] ~= '0' then
  local top = redis.pcall('ZRANGE', KEYS[#KEYS], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
  if top.err then return redis.error_reply('CORRUPT ' .. KEYS[#KEYS] .. ' is not a sorted set') end
  out[4] = top
end
return out
"""

_COMMIT = """
-- KEYS: 1 popularity zset, 2 this commit's done-marker, then per user: hash, ring.
-- ARGV: 1 state field, 2 state-stamp field, 3 new stamp, 4 TTL ms (0: none), 5 oldest model version whose fields
-- are kept, 6 bytes per state, 7 history_len, 8 the new states (concatenated, user order), 9 the ring records to
-- write (12 bytes each, user order), 10 per user 5 fields of FIELD bytes: expected stamp ('0' = a new user), new
-- count, new last time, ring slot of the user's first record, records of the user in ARGV[9];
-- 11 popularity: per item a zero-padded ITEM_DIGITS-byte member and a FIELD-byte count.
DROP_OLD_VERSIONS
local size, H, states, rings, users, pop = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local nu = (#KEYS - 2) / 2
local function field(i, j)                     -- field j of user i's record, as the decimal string it holds
  local at = 5 * FIELD * (i - 1) + FIELD * (j - 1)
  return string.match(string.sub(users, at + 1, at + FIELD), '^%-?%d+')
end
local lost = {}
for i = 1, nu do
  local h = KEYS[2*i+1]
  local cur = redis.pcall('HGET', h, 'w')
  if type(cur) == 'table' then return redis.error_reply('CORRUPT ' .. h .. ' is not a hash') end
  if (cur or '0') ~= field(i, 1) then lost[#lost+1] = i end
end
if #lost > 0 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {2} end    -- a retry of a commit that was applied
  table.insert(lost, 1, 0)
  return lost
end
local ttl, keep, from = tonumber(ARGV[4]), tonumber(ARGV[5]), 0
for i = 1, nu do
  local h, r = KEYS[2*i+1], KEYS[2*i+2]
  local added = redis.call('HSET', h, 'n', field(i, 2), 't', field(i, 3), 'w', ARGV[3],
                          ARGV[1], string.sub(states, (i - 1) * size + 1, i * size), ARGV[2], ARGV[3])
  if added > 0 and added < 5 then drop_old_versions(h, keep) end     -- a first state of this version
  local slot, k = tonumber(field(i, 4)), tonumber(field(i, 5))
  local first = math.min(k, H - slot)              -- records up to the ring's end, the rest from slot 0
  local ok = redis.pcall('SETRANGE', r, 12 * slot, string.sub(rings, from + 1, from + 12 * first))
  if type(ok) == 'table' then return redis.error_reply('CORRUPT ' .. r .. ' is not a string') end
  if k > first then redis.call('SETRANGE', r, 0, string.sub(rings, from + 12 * first + 1, from + 12 * k)) end
  from = from + 12 * k
  if ttl > 0 then redis.call('PEXPIRE', h, ttl); redis.call('PEXPIRE', r, ttl) end
end
-- popularity: read every item's score in one call, write them back in one (not one ZINCRBY per item)
local width, members, counts = ITEM_DIGITS + FIELD, {}, {}
for p = 0, #pop / width - 1 do
  members[#members+1] = string.sub(pop, p * width + 1, p * width + ITEM_DIGITS)
  counts[#counts+1] = tonumber(string.match(string.sub(pop, p * width + ITEM_DIGITS + 1, (p + 1) * width), '^%d+'))
end
for at = 1, #members, 1000 do                  -- chunks: Lua's unpack() has a bounded stack
  local part = {unpack(members, at, math.min(at + 999, #members))}
  local scores = redis.pcall('ZMSCORE', KEYS[1], unpack(part))
  if scores.err then return redis.error_reply('CORRUPT ' .. KEYS[1] .. ' is not a sorted set') end
  local args = {}
  for j, m in ipairs(part) do
    args[#args+1] = (tonumber(scores[j]) or 0) - counts[at + j - 1]
    args[#args+1] = m
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
redis.call('SET', KEYS[2], '1', 'PX', DONE_TTL_MS)
return {1}
"""

_PUT_STATES = """
-- Write back rebuilt states: only where the user still carries the stamp they were rebuilt for and holds no
-- current state of this version yet (so a state is written once per stamp and version).
-- KEYS: per user hash.  ARGV: 1 state field, 2 state-stamp field, 3 bytes per state, 4 the stamps (FIELD bytes
-- each), 5 the states (concatenated), 6 oldest model version whose fields are kept.
DROP_OLD_VERSIONS
local size, keep = tonumber(ARGV[3]), tonumber(ARGV[6])
local written = 0
for i = 1, #KEYS do
  local v = redis.pcall('HMGET', KEYS[i], 'w', ARGV[2])
  if v.err then return redis.error_reply('CORRUPT ' .. KEYS[i] .. ' is not a hash') end
  local stamp = string.match(string.sub(ARGV[4], FIELD * (i - 1) + 1, FIELD * i), '^%d+')
  if v[1] == stamp and v[2] ~= stamp then
    if redis.call('HSET', KEYS[i], ARGV[1], string.sub(ARGV[5], (i - 1) * size + 1, i * size), ARGV[2], stamp) > 0
    then
      drop_old_versions(KEYS[i], keep)         -- a first state of this version
    end
    written = written + 1
  end
end
return written
"""


_DROP_OLD_VERSIONS = """
local function drop_old_versions(h, keep)      -- the fields of model versions before `keep` (the previous one)
  for _, f in ipairs(redis.call('HKEYS', h)) do
    local ver = string.match(f, '^sw?:(%d+)$')
    if ver and tonumber(ver) < keep then redis.call('HDEL', h, f) end
  end
end
"""


def _fill(script: str) -> str:
    return (script.replace("DROP_OLD_VERSIONS", _DROP_OLD_VERSIONS)
            .replace("ITEM_DIGITS", str(_ITEM_DIGITS)).replace("FIELD", str(FIELD))
            .replace("RECORD", str(_READ_RECORD.itemsize)).replace("DONE_TTL_MS", str(DONE_TTL_MS)))


_READ, _COMMIT, _PUT_STATES = _fill(_READ), _fill(_COMMIT), _fill(_PUT_STATES)

_USER_INDICES = """
-- Text user ids -> their shared index, allocating the next index to an id never seen (atomically: two processes
-- asking for the same new id get the same index). KEYS: 1 id hash (id -> index), 2 counter.  ARGV: the ids.
local out = {}
for i = 1, #ARGV do
  local v = redis.pcall('HGET', KEYS[1], ARGV[i])
  if type(v) == 'table' then return redis.error_reply('CORRUPT ' .. KEYS[1] .. ' is not a hash') end
  if not v then
    v = redis.call('INCR', KEYS[2]) - 1
    redis.call('HSET', KEYS[1], ARGV[i], v)
  end
  out[i] = tonumber(v) or -1
end
return out
"""

_REGISTER = """
-- KEYS: 1 models (fingerprint -> version), 2 layouts (version -> layout), 3 version counter.
-- ARGV: 1 fingerprint, 2 layout JSON.  -> the version of this model, a new one for a model never seen.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  if redis.call('HGET', KEYS[2], v) ~= ARGV[2] then
    return redis.error_reply('LAYOUT model version ' .. v .. ' is registered in ' .. KEYS[2] ..
                             ' with another state layout')
  end
  return tonumber(v)
end
v = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], ARGV[1], v)
redis.call('HSET', KEYS[2], v, ARGV[2])
return v
"""


@dataclass
class StoreRead:
    """What the store held for a batch of distinct users at one instant (one atomic read). m users.

    known (m,) bool: the store has events of the user.   n_events, last_ts, stamps (m,) int64 (0, INT64_MIN, 0 when
    unknown).   local_current (m,) bool: the caller's local copy carries the current stamp (nothing shipped).
    shipped (m,) bool: states[i] holds the store's current state for the model version.   has_ring (m,) bool:
    ring_items / ring_times (m, history_len) int64 hold the raw ring (event j at j % history_len).
    popular: (items (k,) int64, counts (k,) int64) when asked for, most observed first.
    """
    known: np.ndarray
    n_events: np.ndarray
    last_ts: np.ndarray
    stamps: np.ndarray
    local_current: np.ndarray
    shipped: np.ndarray
    states: np.ndarray
    has_ring: np.ndarray
    ring_items: np.ndarray
    ring_times: np.ndarray
    popular: Optional[Tuple[np.ndarray, np.ndarray]] = None


@dataclass
class CommitOutcome:
    """applied: the batch is stored (all users moved).  lost (r,) int64: indices of the users whose stamp had
    moved on (nothing was written).  stamp: the stamp every user of an applied batch now carries."""
    applied: bool
    lost: np.ndarray
    stamp: int


class RedisStateStore:
    """Per-user serving state in one Redis server, shared by every serving process that uses the same prefix.

    Args:
        url: ``redis://[:password@]host:port/db`` (or ``rediss://`` for TLS, ``unix:///path.sock``).
        prefix: namespace of every key (several deployments can share one server).
        history_len: events kept per user (the ring); every process on a prefix must use the same (checked).
        ttl_s: forget a user this many seconds after its last event (None: never). Expiry removes the user whole.
        socket_timeout_s, connect_timeout_s: per-call limits on the socket (a batch of 1,024 users of the
            ml-100k-sized model moves ~10 MB, well inside the default).
        retries, retry_backoff_s: a failed connection or timeout is retried this many times with exponential
            backoff starting at retry_backoff_s; then the call raises StoreUnavailableError. Retried commits are
            idempotent (the done-marker), so a retry never applies a batch twice.
        max_connections: connection-pool size (threads beyond it wait up to socket_timeout_s for a connection).
        max_cas_retries: how often a caller may re-apply a batch that lost its compare-and-set (see
            `OnlineRecommender`) before StoreConflictError.

    Raises:
        InputError: a bad URL or setting; a history_len other than the one stored under the prefix.
        StoreUnavailableError: the server cannot be reached (on any call).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "t2arec", history_len: int = 200,
                 ttl_s: Optional[float] = None, socket_timeout_s: float = 2.0, connect_timeout_s: float = 0.5,
                 retries: int = 2, retry_backoff_s: float = 0.05, max_connections: int = 32,
                 max_cas_retries: int = 64):
        redis = _redis()
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
        self.url = _check_url(url)
        self.prefix = _check_prefix(prefix)
        self.history_len = _positive_int(history_len, "history_len")
        self.ttl_ms = 0 if ttl_s is None else _positive_int(round(float(ttl_s) * 1000), "ttl_s (in ms)")
        self.max_cas_retries = _positive_int(max_cas_retries, "max_cas_retries")
        for name, value in (("socket_timeout_s", socket_timeout_s), ("connect_timeout_s", connect_timeout_s),
                            ("retry_backoff_s", retry_backoff_s)):
            if not float(value) > 0:
                raise InputError(f"RedisStateStore: {name} must be > 0, got {value!r}")
        if int(retries) < 0:
            raise InputError(f"RedisStateStore: retries must be >= 0, got {retries!r}")
        self.settings = {"socket_timeout_s": float(socket_timeout_s), "connect_timeout_s": float(connect_timeout_s),
                         "retries": int(retries), "retry_backoff_s": float(retry_backoff_s),
                         "max_connections": int(max_connections)}
        try:
            pool = redis.BlockingConnectionPool.from_url(
                self.url, max_connections=int(max_connections), timeout=float(socket_timeout_s),
                # replies that ship states carry 10 KB per user: read them in 1 MB pieces (redis-py's 64 KB
                # default made a 1,024-user read cost ~40 ms of client CPU instead of ~16; no change at batch 1)
                socket_read_size=1 << 20,
                socket_timeout=float(socket_timeout_s), socket_connect_timeout=float(connect_timeout_s),
                retry=Retry(ExponentialBackoff(cap=10 * float(retry_backoff_s), base=float(retry_backoff_s)),
                            int(retries)),
                retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError])
        except ValueError as exc:
            raise InputError(f"RedisStateStore: bad URL {self.url!r}: {exc}") from None
        self._redis = redis.Redis(connection_pool=pool)
        self._scripts = {name: self._redis.register_script(code) for name, code in
                         (("read", _READ), ("commit", _COMMIT), ("put_states", _PUT_STATES),
                          ("register", _REGISTER), ("user_indices", _USER_INDICES))}
        self._state_sizes: dict = {}             # model version -> floats per state, checked against the store
        self.counters = {"round_trips": 0, "commits": 0, "cas_conflicts": 0, "states_written_back": 0}
        self._check_history_len()

    # -- keys --------------------------------------------------------------------------------------------------
    def _key(self, *parts) -> str:
        return ":".join((self.prefix,) + tuple(str(p) for p in parts))

    def _user_keys(self, users: np.ndarray) -> List[str]:
        """hash, ring, hash, ring, ... for each user."""
        keys = []
        for u in users.tolist():
            keys += (f"{self.prefix}:u:{u}", f"{self.prefix}:r:{u}")
        return keys

    # -- calls with the error mapping ----------------------------------------------------------------------------
    def _call(self, what: str, fn, *args, **kwargs):
        redis = _redis()
        self.counters["round_trips"] += 1
        try:
            return fn(*args, **kwargs)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StoreUnavailableError(
                f"{what}: Redis at {self._where()} did not answer ({type(exc).__name__}: {exc}) after "
                f"{self.settings['retries']} retries; nothing of this call was written, unless a lost reply hid "
                f"a write that then was applied whole") from None
        except redis.exceptions.ResponseError as exc:
            text = str(exc)
            if "CORRUPT" in text or "WRONGTYPE" in text:
                raise StoreCorruptError(f"{what}: {_after(text, 'CORRUPT ')} (Redis at {self._where()}); "
                                        f"nothing was written") from None
            if "LAYOUT" in text:
                raise InputError(f"{what}: {_after(text, 'LAYOUT ')}") from None
            raise StoreError(f"{what}: Redis at {self._where()} refused the call: {text}") from None

    def _where(self) -> str:
        parts = urllib.parse.urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}{':' + str(parts.port) if parts.port else ''}{parts.path}"

    def _script(self, name: str, keys: Sequence[str], args: Sequence):
        return self._call(name, self._scripts[name], keys=list(keys), args=list(args), client=self._redis)

    # -- set-up --------------------------------------------------------------------------------------------------
    def ping(self) -> bool:
        return bool(self._call("ping", self._redis.ping))

    def _check_history_len(self) -> None:
        key = self._key("config")
        self._call("connect", self._redis.hsetnx, key, "history_len", self.history_len)
        stored = self._call("connect", self._redis.hget, key, "history_len")
        if stored is None or int(stored) != self.history_len:
            raise InputError(f"RedisStateStore: {key} says history_len={stored.decode() if stored else None}; "
                             f"this store was opened with history_len={self.history_len}. Every process on a "
                             f"prefix must keep the same number of events per user")

    def register_model(self, fingerprint: str, layout: dict) -> int:
        """The model version of a model (its fingerprint: a digest of weights and config) and state layout:
        the version it already has under this prefix, or the next free one. Processes serving the same
        checkpoint therefore agree on its version without talking to each other.

        Raises: InputError when the fingerprint is registered with another layout."""
        desc = json_io.dumps(layout, indent=None, sort_keys=True)
        version = int(self._script("register", [self._key("models"), self._key("layouts"),
                                                self._key("next_version")], [fingerprint, desc]))
        self._state_sizes[version] = int(layout["size"])
        return version

    def state_size(self, version: int) -> int:
        """Floats per state of a registered model version. Raises InputError for a version never registered."""
        if version not in self._state_sizes:
            desc = self._call("read", self._redis.hget, self._key("layouts"), int(version))
            if desc is None:
                known = sorted(int(v) for v in self._call("read", self._redis.hkeys, self._key("layouts")))
                raise InputError(f"model version {version} is not registered in {self._key('layouts')} at "
                                 f"{self._where()} (registered: {known or 'none'}); register the model first")
            try:
                self._state_sizes[version] = int(json.loads(desc)["size"])
            except (ValueError, KeyError, TypeError):
                raise StoreCorruptError(f"{self._key('layouts')} field {version}: not a layout") from None
        return self._state_sizes[version]

    # -- read ----------------------------------------------------------------------------------------------------
    def read(self, users: np.ndarray, version: int, local_stamps: Optional[np.ndarray] = None,
             rings: str = "missing", top_k: int = 0) -> StoreRead:
        """One atomic read of distinct users (m,) int64 for model `version`.

        local_stamps (m,) int64: the stamp of the caller's local copy of each user's state (0: none); a user whose
        local copy is current gets no state shipped. rings: "all" ships every known user's ring, "missing" only
        those whose state must be rebuilt (no current state of this version anywhere), "none" never.
        top_k > 0 also returns the k most observed items.

        Raises: StoreCorruptError naming the key of an unreadable value; InputError for an unregistered version;
        StoreUnavailableError.
        """
        size, H = self.state_size(version), self.history_len
        m = len(users)
        mine = np.zeros(m, np.int64) if local_stamps is None else np.asarray(local_stamps, np.int64)
        keys = self._user_keys(users) + [self._key("pop")]
        reply = self._script("read", keys, [f"s:{version}", f"sw:{version}", rings, int(top_k), 4 * size,
                                            RING_RECORD.itemsize * H, _decimal(mine)])
        records = np.frombuffer(reply[0], _READ_RECORD)
        hashes = keys[0:2 * m:2]
        got = _empty_read(m, size, H)
        got.known[:] = records["known"] == b"1"
        known = np.flatnonzero(got.known)
        got.n_events[known] = _int_column(records["n"][known], [hashes[i] for i in known], "n", minimum=1)
        got.last_ts[known] = _int_column(records["t"][known], [hashes[i] for i in known], "t")
        got.stamps[known] = _int_column(records["w"][known], [hashes[i] for i in known], "w", minimum=1)
        got.local_current[:] = records["status"] == b"1"
        got.shipped[:] = records["status"] == b"2"
        shipped = np.flatnonzero(got.shipped)
        got.states[shipped] = np.frombuffer(reply[1], "<f4").reshape(len(shipped), size)
        _check_finite(got.states[shipped], [hashes[i] for i in shipped], f"s:{version}")
        got.has_ring[:] = records["ring"] == b"1"
        ring = np.frombuffer(reply[2], RING_RECORD).reshape(-1, H)
        got.ring_items[got.has_ring], got.ring_times[got.has_ring] = ring["item"], ring["time"]
        if top_k:
            got.popular = _popular(reply[3], self._key("pop"))
        return got

    # -- commit --------------------------------------------------------------------------------------------------
    def commit(self, users: np.ndarray, version: int, expected_stamps: np.ndarray, n_before: np.ndarray,
               counts: np.ndarray, last_ts: np.ndarray, states: np.ndarray, event_user: np.ndarray,
               event_rank: np.ndarray, items: np.ndarray, times: np.ndarray, stamp: Optional[int] = None
               ) -> CommitOutcome:
        """Store the batch if every user still carries `expected_stamps` (0: a user believed new); else nothing.

        users (U,) distinct int64; n_before, counts, last_ts (U,) int64: events before the call, events in it, the
        new last timestamp; states (U, size) float32: the new states. Events (n,): event_user = index into users,
        event_rank = rank among that user's events in the call (call order), items, times. `stamp`: pass the same
        value again to retry a call whose outcome is unknown (it is applied at most once).

        Raises: StoreCorruptError, StoreUnavailableError, InputError (unregistered version or wrong state size).
        """
        size = self.state_size(version)
        states = np.ascontiguousarray(states, dtype="<f4")
        if states.shape != (len(users), size):
            raise InputError(f"commit: states of shape {states.shape}, expected {(len(users), size)}")
        stamp = stamp or _new_stamp()
        H = self.history_len
        kept = np.minimum(counts, H)                     # only each user's last H events land in its ring
        first = counts - kept                            # rank of the first of them
        per_user = np.empty(len(users), _COMMIT_RECORD)
        per_user["expected"], per_user["n"], per_user["t"] = (np.asarray(expected_stamps, np.int64).astype(
            _COMMIT_RECORD["expected"]), (n_before + counts).astype(_COMMIT_RECORD["n"]),
            np.asarray(last_ts, np.int64).astype(_COMMIT_RECORD["t"]))
        per_user["slot"] = ((n_before + first) % H).astype(_COMMIT_RECORD["slot"])
        per_user["records"] = kept.astype(_COMMIT_RECORD["records"])
        keep = event_rank >= first[event_user]
        order = np.lexsort((event_rank[keep], event_user[keep]))        # user by user, in call order
        records = np.empty(len(order), RING_RECORD)
        records["item"], records["time"] = items[keep][order], times[keep][order]
        popular_items, popular_counts = np.unique(items, return_counts=True)
        popular = np.empty(len(popular_items), _POPULAR_RECORD)
        popular["member"] = np.char.zfill(popular_items.astype(_POPULAR_RECORD["member"]), _ITEM_DIGITS)
        popular["count"] = popular_counts.astype(_POPULAR_RECORD["count"])
        keys = [self._key("pop"), self._key("done", stamp)] + self._user_keys(users)
        reply = self._script("commit", keys, [f"s:{version}", f"sw:{version}", str(stamp), self.ttl_ms,
                                              int(version) - 1, 4 * size, H, states.tobytes(), records.tobytes(),
                                              per_user.tobytes(), popular.tobytes()])
        self.counters["commits"] += 1
        if reply[0] == 0:
            self.counters["cas_conflicts"] += 1
            return CommitOutcome(False, np.asarray(reply[1:], np.int64) - 1, stamp)
        return CommitOutcome(True, np.zeros(0, np.int64), stamp)

    # -- text user ids ---------------------------------------------------------------------------------------------
    def user_indices(self, ids: Sequence[str]) -> np.ndarray:
        """The shared index (0, 1, 2, ... in order of first sight, by any process) of each text user id: (n,) int64.
        An id never seen gets the next index, atomically, so every process on the prefix maps an id to the same
        index (`raw_ids.UserKeys` turns it into a user key). One round trip. Indices are never reused; the map
        (P:user_ids) grows with the distinct ids and is not expired by the TTL.

        Raises: StoreCorruptError (P:user_ids not a hash, or an index that is not a non-negative integer),
        StoreUnavailableError."""
        if not len(ids):
            return np.zeros(0, np.int64)
        got = np.asarray(self._script("user_indices", [self._key("user_ids"), self._key("next_user_id")],
                                      [str(i) for i in ids]), np.int64)
        bad = np.flatnonzero(got < 0)
        if len(bad):
            raise StoreCorruptError(f"{self._key('user_ids')} field {ids[bad[0]]!r}: not a user index")
        return got

    # -- rebuilt states, forgetting, popularity --------------------------------------------------------------------
    def put_states(self, users: np.ndarray, version: int, stamps: np.ndarray, states: np.ndarray) -> int:
        """Write back states rebuilt from the rings (users distinct), each only if the user still carries the
        stamp it was rebuilt for and has no current state of this version; -> how many were written."""
        size = self.state_size(version)
        states = np.ascontiguousarray(states, dtype="<f4")
        if states.shape != (len(users), size):
            raise InputError(f"put_states: states of shape {states.shape}, expected {(len(users), size)}")
        written = int(self._script("put_states", self._user_keys(users)[0::2],
                                   [f"s:{version}", f"sw:{version}", 4 * size,
                                    _decimal(np.asarray(stamps, np.int64)), states.tobytes(), int(version) - 1]))
        self.counters["states_written_back"] += written
        return written

    def forget(self, users: np.ndarray) -> int:
        """Remove users entirely (every version's state, count, ring); -> how many were known."""
        keys = self._user_keys(users)
        hashes = keys[0::2]
        known = self._call("forget", self._redis.exists, *hashes) if hashes else 0
        if keys:
            self._call("forget", self._redis.delete, *keys)
        return int(known)

    def top_items(self, k: int) -> Tuple[np.ndarray, np.ndarray]:
        """The k most observed items, most first (ties: lower id first) -> (items, counts) int64."""
        reply = self._call("top_items", self._redis.zrange, self._key("pop"), 0, int(k) - 1, withscores=True)
        return _popular([x for pair in reply for x in pair], self._key("pop"))

    def n_users(self) -> int:
        """Users with a hash under the prefix (SCAN: O(keys); for tests and tools, not the hot path)."""
        return sum(1 for _ in self._redis.scan_iter(match=f"{self.prefix}:u:*", count=1000))

    def clear(self) -> int:
        """Delete every key under the prefix (SCAN + DEL); -> how many. For tests and tools."""
        keys = list(self._redis.scan_iter(match=f"{self.prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            self._redis.delete(*keys[start:start + 1000])
        self._state_sizes.clear()
        return len(keys)

    def describe(self) -> dict:
        return {"url": self._where(), "prefix": self.prefix, "history_len": self.history_len,
                "ttl_s": self.ttl_ms / 1000 if self.ttl_ms else None, **self.settings}

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisStateStore({self._where()!r}, prefix={self.prefix!r}, history_len={self.history_len})"


def _redis():
    from t2arec_fast.optional import require
    return require("redis", "redis", "The Redis state store")


# -- decoding with checks: every refusal names the key ------------------------------------------------------------
def _empty_read(m: int, size: int, H: int) -> StoreRead:
    return StoreRead(known=np.zeros(m, bool), n_events=np.zeros(m, np.int64), last_ts=np.full(m, INT64_MIN),
                     stamps=np.zeros(m, np.int64), local_current=np.zeros(m, bool), shipped=np.zeros(m, bool),
                     states=np.zeros((m, size), np.float32), has_ring=np.zeros(m, bool),
                     ring_items=np.zeros((m, H), np.int64), ring_times=np.zeros((m, H), np.int64))


def _decimal(values: np.ndarray) -> bytes:
    """int64 values as FIELD-byte decimal fields (NUL-padded), the scripts' per-user number format."""
    return values.astype(f"S{FIELD}").tobytes()


def _int_column(raw: np.ndarray, keys: List[str], field: str, minimum: Optional[int] = None) -> np.ndarray:
    """Decimal fields (m,) of a read reply → (m,) int64; the first bad one is refused naming its key."""
    try:
        values = raw.astype(np.int64)
    except (ValueError, OverflowError):            # the error path only: find the first bad field
        values = None
    if values is None:
        bad = [i for i in range(len(raw)) if not _parses_as_int64(raw[i])] or [0]
    else:
        bad = np.flatnonzero(values < minimum) if minimum is not None else []
    if len(bad):
        i = bad[0]
        raise StoreCorruptError(f"{keys[i]} field {field!r} holds {raw[i].strip()!r}, not an int64"
                                + (f" >= {minimum}" if minimum is not None else ""))
    return values


def _parses_as_int64(raw: bytes) -> bool:
    try:
        return -(2 ** 63) <= int(raw) < 2 ** 63
    except ValueError:
        return False


def _check_finite(states: np.ndarray, keys: List[str], field: str) -> None:
    bad = np.argwhere(~np.isfinite(states))
    if len(bad):
        row, position = bad[0]
        raise StoreCorruptError(f"{keys[row]} field {field!r} holds a non-finite value at position {int(position)}")


def _popular(flat: list, key: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        items = np.array([int(m) for m in flat[0::2]], np.int64)
        counts = np.array([-float(s) for s in flat[1::2]]).astype(np.int64)
    except (TypeError, ValueError):
        raise StoreCorruptError(f"{key} holds members that are not item ids with counts") from None
    return items, counts


def _new_stamp() -> int:
    return secrets.randbits(63) or 1


def _after(text: str, marker: str) -> str:
    return text.split(marker, 1)[1] if marker in text else text


def _check_url(url) -> str:
    """redis://[user:password@]host[:port][/db], rediss://... (TLS) or unix:///path.sock; the db is an integer."""
    usage = "redis://host:port/db, rediss://host:port/db or unix:///path.sock"
    if not isinstance(url, str):
        raise InputError(f"RedisStateStore: {url!r} is not a Redis URL ({usage})")
    parts = urllib.parse.urlsplit(url)
    try:
        parts.port                                          # raises for a port that is not a number
    except ValueError:
        raise InputError(f"RedisStateStore: bad URL {url!r}: the port is not a number") from None
    db = parts.path.lstrip("/")
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise InputError(f"RedisStateStore: {url!r} is not a Redis URL ({usage})")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise InputError(f"RedisStateStore: bad URL {url!r}: the database {db!r} is not a number")
    return url


def _check_prefix(prefix) -> str:
    if not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix):
        raise InputError(f"RedisStateStore: prefix must be a non-empty string without spaces, got {prefix!r}")
    return prefix


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(f"RedisStateStore: {name} must be a positive integer, got {value!r}")
    return int(value)
