"""The shared state store of serving: each user's state, event count, last timestamp and ring of recent events in
Redis, so that any of several serving processes can answer for any user (docs/serving.md, "Shared state").

    store = RedisStateStore("redis://127.0.0.1:6379/0", prefix="t2arec", history_len=200, ttl_s=None)
    version = store.register_model(fingerprint, layout)      # the same model gets the same version in every process
    got = store.read(users, version, local_stamps, ...)       # one round trip: counts, stamps, states, events
    outcome = store.commit(users, version, expected_stamps, ...)   # one round trip: all users move, or none

This module only stores and checks; `OnlineRecommender` runs the model. Every batch call is one round trip: one
Lua script, which Redis runs atomically — in one transaction (MULTI/EXEC) with an MSETNX of the new states when it
writes any, under names only that call uses — so a batch is applied whole or not at all, also when the calling
process dies in the middle of it.

Key layout under the prefix P (one Redis server and database; docs/serving.md explains each choice):

    P:u:<user>      hash    n = event count, t = last timestamp, w = commit stamp (a random int64 drawn by the
                            observe() call that last moved the user), e = epoch (the stamp that created the user),
                            sw:<v> / sn:<v> = the stamp and event count of the user's stored state for model
                            version v (stored every snapshot_every events: the ring holds the ones after it)
    P:s:<user>:<v>:<stamp>  string  that state: packed float32 (written once, never changed; deleted when replaced)
    P:r:<user>      string  the ring of the last history_len events, 12 bytes each (int32 item, int64 time, little
                            endian); event j (0-based, over all time) at byte 12 * (j % history_len)
    P:pop           zset    zero-padded item id -> -(times observed): ZRANGE 0 k-1 = most observed first, ties by id
    P:models        hash    model fingerprint -> version;   P:layouts  hash  version -> layout JSON
    P:next_version  counter of versions handed out;         P:config   hash  history_len, format (STORE_FORMAT)
    P:done:<stamp>  string  marks an applied commit for DONE_TTL_MS, so that a retried commit is never applied twice
    P:user_ids      hash    text user id -> its shared index (raw_ids.UserKeys);   P:next_user_id  counter

Compare-and-set: a commit names, per user, the stamp its new state was computed from (empty for a user it believes
new); the script applies the batch only if every user still carries that stamp. The stamp, not the bare event
count, is compared because a count can come back (a user forgotten or expired by the TTL, then observed again)
while a stamp never repeats. Within one epoch the count identifies the state: a reader holding an older copy of the
same epoch steps it through the events after it (docs/serving.md, "States stored every snapshot_every events").
"""
from __future__ import annotations

import json
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from t2arec_fast import json_io
from t2arec_fast.errors import InputError, StoreCorruptError, StoreError, StoreUnavailableError

__all__ = ["RedisStateStore", "StoreRead", "CommitOutcome", "RING_RECORD", "new_stamp"]

RING_RECORD = np.dtype([("item", "<i4"), ("time", "<i8")])     # packed: 12 bytes per event
assert RING_RECORD.itemsize == 12
INT64_MIN = np.iinfo(np.int64).min
SNAPSHOT_EVERY = 16            # default: a stored state is at most 15 events behind (docs/serving.md)
DONE_TTL_MS = 600_000          # how long an applied commit's stamp is remembered (longer than any retry sequence)
STORE_FORMAT = 3               # the key layout above; 2 (before 2026-12-02) stored every user's state on every
                               # commit, 1 (before 2026-12-01) kept states in the user hash
_ITEM_DIGITS = 10              # popularity members are zero-padded so that Redis' lexical tie order is numeric
FIELD = 21                     # bytes of one decimal int64 field in a fixed-width record (a read's reply, the
                               # client's numpy packing): a sign, 19 digits and at least one pad byte
_READ_RECORD = np.dtype([("known", "S1"), ("n", f"S{FIELD}"), ("t", f"S{FIELD}"), ("w", f"S{FIELD}"),
                         ("e", f"S{FIELD}"), ("sw", f"S{FIELD}"), ("sn", f"S{FIELD}"), ("status", "S1"),
                         ("ring", "S1")])                          # one user in the read script's reply
_LOCAL_RECORD = np.dtype([("w", f"S{FIELD}"), ("e", f"S{FIELD}"), ("n", f"S{FIELD}")])   # a caller's local copy

# -- Lua scripts: each runs atomically inside Redis; errors name the key -------------------------------------------
# Per-user numbers travel as decimal text inside one argument or reply string — in the arguments, a MessagePack
# array of decimal strings (packed by the msgpack library) that a script unpacks with numbers() (Redis' bundled
# cmsgpack, in C: 384 fields took 14 µs against 59 for a Lua pattern scan of space-separated text and ~150 for
# NUL-padded fields; measured, Redis 7.0), in replies fixed-width fields (FIELD bytes each, left-aligned, padded with NUL or spaces) that the client
# reads by position — and a commit's ring records as one concatenated blob: a batch of any size is a handful of
# arguments, packed and parsed by numpy on the client instead of hundreds of per-user values (a read's shipped
# states and rings come back one string each: joining them in Lua costs more than sending them).
# Decimal text, not binary, because Lua's numbers are doubles: a 63-bit stamp or an int64 time would not survive
# them.
# States never pass through a script on the way in: every string a script receives or builds is copied into Lua
# (measured: ~1.3 ms of Redis CPU for the 640 KB of a 64-user commit, 10x the rest of the script), so a commit's
# states go in one MSETNX queued with the script in one MULTI/EXEC, under names no other write uses (the commit's
# stamp is in them); the script keeps them (the user now points at them) or deletes them (nothing applied).
_STATE_KEY = """
local PREFIX = ARGV[PREFIX_ARG]
local function state_key(h, version, stamp)       -- P:s:<user>:<version>:<stamp>, from the user's hash key P:u:<user>
  return PREFIX .. ':s:' .. string.sub(h, #PREFIX + 4) .. ':' .. version .. ':' .. stamp
end
local function drop_old_versions(h, keep)         -- states of model versions before `keep` (the previous one)
  local all = redis.call('HGETALL', h)
  for j = 1, #all, 2 do
    local ver = string.match(all[j], '^sw:(%d+)$')
    if ver and tonumber(ver) < keep then
      redis.call('UNLINK', state_key(h, ver, all[j + 1]))
      redis.call('HDEL', h, all[j], 'sn:' .. ver)
    end
  end
end
local function numbers(blob)                    -- the decimal strings of a MessagePack array, in order
  return cmsgpack.unpack(blob)
end
local function user_keys(ids)                    -- P:u:<user>, P:r:<user> of each user id
  local h, r = {}, {}
  for i, id in ipairs(ids) do h[i], r[i] = PREFIX .. ':u:' .. id, PREFIX .. ':r:' .. id end
  return h, r
end
local function keep_state(key, ttl)               -- a state the script adopts lives as long as its user
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"""

_READ = """
-- KEYS: 1 the popularity zset (the users' keys are named by ARGV 9).  ARGV: 1 model version, 2 key prefix,
-- 3 ring mode ('all' | 'missing' | 'none'), 4 top-k of popularity (0: none), 5 bytes per state, 6 history_len,
-- 7 the caller's local copy per user: stamp, epoch, event count (a MessagePack array; stamp '0': no local copy),
-- 8 replay limit: the most events the caller steps its local copy through (a stored state within history_len
-- events, or an empty state for a user with at most history_len events, is always stepped), 9 the user ids
-- (a MessagePack array: the script builds their keys, so a call of any size is a handful of arguments).
-- Returns {records, states, rings, events[, top]}: one RECORD-byte record per user: known ('0'/'1'), n, t, w, e,
-- sw:<v>, sn:<v> (FIELD bytes each, space-padded), status, ring ('0'/'1'); the shipped states (status 2), the
-- shipped rings (each as stored: at most history_len records, the client pads it) and the events to replay
-- (statuses 2, 3, 4: the user's events from the base's count to n, 12 bytes each, in order), each an array in user
-- order. Status: '1' the caller's copy is current; '3' the caller's copy is behind by the events shipped; '2' the
-- version's stored state is shipped, with the events after it; '4' no usable stored state, at most history_len
-- events: all of them are shipped (step them from an empty state); '0' none of those: rebuild from the ring.
-- Arrays, not concatenations: Lua 5.1's table.concat of 64 states of 10 KB cost Redis 3.9 ms of CPU, returning them
-- as an array 0.7 ms (measured).
STATE_KEY
local version, size, H, mine, mode = ARGV[1], tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7], ARGV[3]
local limit = math.min(tonumber(ARGV[8]), H)
local hashes, ringkeys = user_keys(numbers(ARGV[9]))
local nu = #hashes
mine = numbers(mine)                             -- per user: stamp, epoch, count
local records, states, rings, events = {}, {}, {}, {}
local unknown = '0' .. string.rep(' ', 6 * FIELD + 2)
local names = {'n', 't', 'w', 'e', 'sw:' .. version, 'sn:' .. version}
local function events_from(r, from, n)          -- ring records of events from .. n-1 (event j at slot j % H)
  if n == from then return '' end
  local a, b = from % H, n % H
  local parts = a < b and {{a, b}} or {{a, H}, {0, b}}
  local g = ''
  for _, p in ipairs(parts) do
    if p[2] > p[1] then
      local got = redis.pcall('GETRANGE', r, 12 * p[1], 12 * p[2] - 1)
      if type(got) == 'table' then return nil, redis.error_reply('CORRUPT ' .. r .. ' is not a string') end
      g = g .. got
    end
  end
  if #g ~= 12 * (n - from) then
    return nil, redis.error_reply('CORRUPT ' .. r .. ' holds ' .. redis.call('STRLEN', r) .. ' bytes: not a ' ..
                                  'ring of the ' .. math.min(n, H) .. ' latest events (12 bytes each)')
  end
  return g
end
for i = 1, nu do
  local h, r = hashes[i], ringkeys[i]
  local v = redis.pcall('HMGET', h, unpack(names))
  if v.err then return redis.error_reply('CORRUPT ' .. h .. ' is not a hash: ' .. v.err) end
  if not v[1] then
    records[i] = unknown
  else
    for j, name in ipairs(names) do
      if v[j] and #v[j] > FIELD - 1 then
        return redis.error_reply('CORRUPT ' .. h .. " field '" .. name .. "' holds " .. #v[j] ..
                                 ' bytes, not an int64')
      end
    end
    -- (a count that is not a number is refused by the client, naming the field: no shortcut is taken for it)
    local n, w, e, sn = tonumber(v[1]) or -1, v[3], v[4], tonumber(v[6] or '')
    if n >= 0 then
      local bad = nil
      if not e then bad = "field 'e' is missing (every user has an epoch)"
      elseif (v[5] == false) ~= (v[6] == false) then bad = "fields 'sw:" .. version .. "' and 'sn:" .. version ..
                                                           "' come together: one is missing"
      elseif v[5] and not string.match(v[5], '^%d+$') then bad = "field 'sw:" .. version .. "' is not a stamp"
      elseif v[6] and not (string.match(v[6], '^%d+$') and sn <= n) then
        bad = "field 'sn:" .. version .. "' holds " .. v[6] .. ', not an event count of at most n = ' .. v[1]
      end
      if bad then return redis.error_reply('CORRUPT ' .. h .. ' ' .. bad) end
    end
    local status, ring, from = '0', '0', nil
    local n_mine = tonumber(mine[3*i])
    if n < 0 then
    elseif w and w == mine[3*i-2] then
      status = '1'                                -- the caller's copy is current: nothing to ship
    elseif e and e == mine[3*i-1] and n_mine < n and n - n_mine <= limit then
      status, from = '3', n_mine                  -- the caller's copy plus the events it has not seen
    else
      if v[5] and n - sn <= H then
        local key = state_key(h, version, v[5])
        local s = redis.pcall('GET', key)
        if type(s) == 'table' then return redis.error_reply('CORRUPT ' .. key .. ' is not a string') end
        if s and #s ~= size then
          return redis.error_reply('CORRUPT ' .. key .. ' (the state ' .. h .. " field 'sw:" .. version ..
                                   "' names) holds " .. #s .. ' bytes, expected ' .. size ..
                                   ' (a state of ' .. size / 4 .. ' float32)')
        end
        if s then                                 -- (a key lost alone, e.g. evicted: rebuilt from the ring)
          status, from = '2', sn
          states[#states+1] = s
        end
      end
      -- no usable stored state, every event still in the ring: step them all from an empty state (what its
      -- committers did, so the same bits); only beyond history_len events rebuild from the ring
      if status == '0' and n <= H then status, from = '4', 0 end
    end
    if from then
      local g, err = events_from(r, from, n)
      if err then return err end
      events[#events+1] = g
    end
    if mode == 'all' or (mode == 'missing' and status == '0') then
      local g = redis.pcall('GET', r)
      if type(g) == 'table' then return redis.error_reply('CORRUPT ' .. r .. ' is not a string') end
      g = g or ''
      if n >= 0 and #g ~= 12 * math.min(n, H) then
        return redis.error_reply('CORRUPT ' .. r .. ' holds ' .. #g .. ' bytes: not a ring of the ' ..
                                 math.min(n, H) .. ' latest events (12 bytes each)')
      end
      ring = '1'
      rings[#rings+1] = g
    end
    records[i] = string.format('1%-FIELDs%-FIELDs%-FIELDs%-FIELDs%-FIELDs%-FIELDs', v[1], v[2] or '', w or '', e or '',
                               v[5] or '', v[6] or '') .. status .. ring
  end
end
local out = {table.concat(records), states, rings, events}
if ARGV[4] ~= '0' then
  local top = redis.pcall('ZRANGE', KEYS[1], 0, tonumber(ARGV[4]) - 1, 'WITHSCORES')
  if top.err then return redis.error_reply('CORRUPT ' .. KEYS[1] .. ' is not a sorted set') end
  out[5] = top
end
return out
"""

_COMMIT = """
-- Runs right after the MSETNX of the batch's new states (P:s:<user>:<version>:<this commit's stamp>; only the users
-- whose state is stored this time), in one MULTI.
-- KEYS: 1 popularity zset, 2 this commit's done-marker (the users' keys are named by ARGV 10).
-- ARGV: 1 model version, 2 key prefix, 3 new stamp, 4 TTL ms (0: none), 5 oldest model version whose states are
-- kept, 6 history_len, 7 the ring records to write (12 bytes each, user order), 8 per user 6 numbers: expected
-- stamp ('0' = a new user), new count, new last time, ring slot of the user's first record, records of the user
-- in ARGV[7], 1 if its new state was sent (0: the stored state stays, the ring has the rest); 9 popularity: per
-- item its zero-padded ITEM_DIGITS-digit member and its count, 10 the user ids (8-10: MessagePack arrays of
-- decimal strings), 11 snapshot_every.  -> {1, users (1-based) whose state was not sent although the stored state of
-- this version is missing or snapshot_every or more events behind (another model version's process stored the
-- last ones: the caller writes them with put_states)} | {0, users whose stamp moved} | {2} (applied before).
STATE_KEY
local version, stamp, H, rings, users, pop = ARGV[1], ARGV[3], tonumber(ARGV[6]), ARGV[7], ARGV[8], ARGV[9]
local SW, SN = 'sw:' .. version, 'sn:' .. version    -- this version's fields of the user hash
local hashes, ringkeys = user_keys(numbers(ARGV[10]))
local nu = #hashes
users = numbers(users)
local function field(i, j) return users[6 * (i - 1) + j] end   -- field j of user i, as the decimal string it holds
local function discard_new_states()            -- not applied: the states sent with it go too, except one a user
  for i = 1, nu do                             -- points at (the same name: an earlier try of this very commit)
    local h = hashes[i]
    if field(i, 6) == '1' and redis.pcall('HGET', h, SW) ~= stamp then
      redis.call('UNLINK', state_key(h, version, stamp))
    end
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then     -- a retry of a commit that was applied: never apply it twice
  discard_new_states()
  return {2}
end
local lost, old, oldn, behind, every = {}, {}, {}, {1}, tonumber(ARGV[11])
for i = 1, nu do
  local h = hashes[i]
  local cur = redis.pcall('HMGET', h, 'w', SW, SN)
  if cur.err then discard_new_states(); return redis.error_reply('CORRUPT ' .. h .. ' is not a hash') end
  if (cur[1] or '0') ~= field(i, 1) then lost[#lost+1] = i end
  old[i], oldn[i] = cur[2], tonumber(cur[3] or '')
end
if #lost > 0 then
  discard_new_states()
  table.insert(lost, 1, 0)
  return lost
end
for i = 0, nu do                               -- key types checked before anything is written: refused whole
  local key, want = KEYS[1], 'zset'
  if i > 0 then key, want = ringkeys[i], 'string' end
  local t = redis.call('TYPE', key).ok
  if t ~= want and t ~= 'none' then
    discard_new_states()
    return redis.error_reply('CORRUPT ' .. key .. ' is not a ' .. (i == 0 and 'sorted set' or 'string'))
  end
end
local ttl, keep, from = tonumber(ARGV[4]), tonumber(ARGV[5]), 0
for i = 1, nu do
  local h, r = hashes[i], ringkeys[i]
  local known = field(i, 1) ~= '0'
  redis.call('HSET', h, 'n', field(i, 2), 't', field(i, 3), 'w', stamp)
  if not known then redis.call('HSET', h, 'e', stamp) end    -- a new user: its epoch is the stamp that made it
  if field(i, 6) == '1' then                   -- the new state was sent: the user points at it
    redis.call('HSET', h, SW, stamp, SN, field(i, 2))
    if old[i] and old[i] ~= stamp then redis.call('UNLINK', state_key(h, version, old[i]))
    elseif known and not old[i] then drop_old_versions(h, keep) end  -- a first state of this version
    keep_state(state_key(h, version, stamp), ttl)
  else
    if old[i] and ttl > 0 then                 -- the stored state stays: it lives as long as its user
      redis.call('PEXPIRE', state_key(h, version, old[i]), ttl)
    end
    local n_new = tonumber(field(i, 2))
    if n_new >= every and (not oldn[i] or n_new - oldn[i] >= every) then behind[#behind+1] = i end
  end
  local slot, k = tonumber(field(i, 4)), tonumber(field(i, 5))
  local first = math.min(k, H - slot)              -- records up to the ring's end, the rest from slot 0
  redis.call('SETRANGE', r, 12 * slot, string.sub(rings, from + 1, from + 12 * first))
  if k > first then redis.call('SETRANGE', r, 0, string.sub(rings, from + 12 * first + 1, from + 12 * k)) end
  from = from + 12 * k
  if ttl > 0 then redis.call('PEXPIRE', h, ttl); redis.call('PEXPIRE', r, ttl) end
end
-- popularity: read every item's score in one call, write them back in one (not one ZINCRBY per item)
local members, counts = {}, {}
pop = numbers(pop)
for p = 1, #pop / 2 do members[p], counts[p] = pop[2 * p - 1], tonumber(pop[2 * p]) end
for at = 1, #members, 1000 do                  -- chunks: Lua's unpack() has a bounded stack
  local part = {unpack(members, at, math.min(at + 999, #members))}
  local scores = redis.call('ZMSCORE', KEYS[1], unpack(part))
  local args = {}
  for j, m in ipairs(part) do
    args[#args+1] = (tonumber(scores[j]) or 0) - counts[at + j - 1]
    args[#args+1] = m
  end
  redis.call('ZADD', KEYS[1], unpack(args))
end
redis.call('SET', KEYS[2], '1', 'PX', DONE_TTL_MS)
return behind
"""

_PUT_STATES = """
-- Adopt rebuilt states written just before in the same MULTI (KEYS 2i, by SET NX): only where the user still carries
-- the stamp they were rebuilt for and holds no state of this version stored under that stamp (so a state is adopted
-- once per stamp and version); it becomes the stored state, at the user's count (sn:<v>). A state whose name the
-- user already points at (written by another process, or rewritten after its key was lost) stays; any other is
-- deleted. Every hash and state key is checked before anything is written.
-- KEYS: per user: hash, new state.  ARGV: 1 model version, 2 key prefix, 3 the stamps (FIELD bytes each),
-- 4 oldest model version whose states are kept.  -> how many states were adopted.
STATE_KEY
local version, keep, nu = ARGV[1], tonumber(ARGV[4]), #KEYS / 2
local function stamp_of(i) return string.match(string.sub(ARGV[3], FIELD * (i - 1) + 1, FIELD * i), '^%d+') end
local function refuse(message)                 -- nothing adopted; the states sent that no user points at go
  for i = 1, nu do                             -- (a key of another type was not written here: it stays)
    if redis.pcall('HGET', KEYS[2*i-1], 'sw:' .. version) ~= stamp_of(i)
       and redis.call('TYPE', KEYS[2*i]).ok == 'string' then
      redis.call('UNLINK', KEYS[2*i])
    end
  end
  return redis.error_reply('CORRUPT ' .. message)
end
local cur = {}
for i = 1, nu do
  cur[i] = redis.pcall('HMGET', KEYS[2*i-1], 'w', 'sw:' .. version, 'n')
  if cur[i].err then return refuse(KEYS[2*i-1] .. ' is not a hash') end
  if redis.call('TYPE', KEYS[2*i]).ok ~= 'string' then return refuse(KEYS[2*i] .. ' is not a string') end
end
local written = 0
for i = 1, nu do
  local h, s, v, stamp = KEYS[2*i-1], KEYS[2*i], cur[i], stamp_of(i)
  if v[1] == stamp then                        -- still the user's current stamp
    if v[2] ~= stamp then
      redis.call('HSET', h, 'sw:' .. version, stamp, 'sn:' .. version, v[3])
      if not v[2] then
        drop_old_versions(h, keep)             -- a first state of this version
      else
        redis.call('UNLINK', state_key(h, version, v[2]))
      end
      written = written + 1
    end
    local left = redis.call('PTTL', h)         -- a state lives as long as its user (the TTL is the hash's)
    if left > 0 then redis.call('PEXPIRE', s, left) end
  elseif v[2] ~= stamp then
    redis.call('UNLINK', s)
  end
end
return written
"""

_FORGET = """
-- Remove users whole: every model version's state, the hash, the ring.  KEYS: per user: hash, ring.
-- ARGV: 1 key prefix.  -> how many were known.
STATE_KEY
local function drop_states_by_name(h)            -- the hash that named them is gone: find them by key name
  local cursor = '0'
  repeat
    local reply = redis.call('SCAN', cursor, 'MATCH', state_key(h, '*', '*'), 'COUNT', 1000)
    cursor = reply[1]
    for _, k in ipairs(reply[2]) do redis.call('UNLINK', k) end
  until cursor == '0'
end
local known = 0
for i = 1, #KEYS / 2 do
  local h = KEYS[2*i-1]
  local kind = redis.call('TYPE', h).ok
  if kind == 'hash' then
    known = known + 1
    drop_old_versions(h, math.huge)
  elseif kind ~= 'none' then                      -- a corrupted user (its hash overwritten): O(keys), rare
    known = known + 1
    drop_states_by_name(h)
  end
  redis.call('UNLINK', h, KEYS[2*i])
end
return known
"""


def _fill(script: str, prefix_arg: int) -> str:
    return (script.replace("STATE_KEY", _STATE_KEY.replace("PREFIX_ARG", str(prefix_arg)))
            .replace("ITEM_DIGITS", str(_ITEM_DIGITS)).replace("FIELD", str(FIELD))
            .replace("RECORD", str(_READ_RECORD.itemsize)).replace("DONE_TTL_MS", str(DONE_TTL_MS)))


_READ, _COMMIT, _PUT_STATES, _FORGET = (_fill(_READ, 2), _fill(_COMMIT, 2), _fill(_PUT_STATES, 2),
                                        _fill(_FORGET, 1))

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

_CONFIG = """
-- KEYS: 1 the prefix's config hash.  ARGV: 1 history_len, 2 key-layout format, 3 snapshot_every.  A new prefix is
-- given all three (atomically: two processes opening one prefix at once agree);
-- -> {stored history_len, stored format, stored snapshot_every}.
if redis.call('HSETNX', KEYS[1], 'history_len', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'format', ARGV[2], 'snapshot_every', ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'history_len', 'format', 'snapshot_every')
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

    known (m,) bool: the store has events of the user.   n_events, last_ts, stamps, epochs (m,) int64 (0,
    INT64_MIN, 0, 0 when unknown; the epoch is the stamp of the commit that created the user: a user forgotten and
    observed again has a new one).   Where each user's current state comes from (at most one is True):
    local_current (m,) bool: the caller's local copy carries the current stamp (nothing shipped);
    replay_local (m,) bool: the caller's local copy (same epoch, fewer events) plus the shipped events;
    shipped (m,) bool: states[i] holds the model version's stored state (its key's stamp: snapshot_stamps[i]),
    after snapshot_counts[i] events (known for every user with a stored state of this version; -1: none), plus
    the shipped events;
    replay_empty (m,) bool: an empty state plus all the user's events (shipped);
    none of these (a known user): rebuild from the ring.
    Shipped events: event_user (k,) index into users, event_items, event_times (k,) int64, each user's in order,
    the first of them being the user's event number event_from[i] (0-based).
    has_ring (m,) bool: ring_items / ring_times (m, history_len) int64 hold the raw ring (event j at j % history_len).
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
    epochs: np.ndarray
    snapshot_counts: np.ndarray
    snapshot_stamps: np.ndarray
    replay_local: np.ndarray
    replay_empty: np.ndarray
    event_from: np.ndarray
    event_user: np.ndarray
    event_items: np.ndarray
    event_times: np.ndarray
    popular: Optional[Tuple[np.ndarray, np.ndarray]] = None


@dataclass
class CommitOutcome:
    """applied: the batch is stored (all users moved).  lost (r,) int64: indices of the users whose stamp had
    moved on (nothing was written).  stamp: the stamp every user of an applied batch now carries.  behind (b,)
    int64: indices of applied users whose state was not sent while the stored state of this model version is
    missing or snapshot_every or more events behind (processes of another version stored the last ones): the
    caller stores them with put_states.  meanwhile_result / meanwhile_error: what commit(meanwhile=...) returned or
    raised (an Exception; computed whatever the outcome: use them only when applied)."""
    applied: bool
    lost: np.ndarray
    stamp: int
    behind: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    meanwhile_result: Any = None
    meanwhile_error: Optional[Exception] = None


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
        snapshot_every: a user's state is stored each time its event count passes a multiple of this (at most
            history_len; 1: on every commit); in between a commit stores only the events, and a reader steps its
            copy (or the stored state) through the events it has not seen (docs/serving.md, "States stored every
            snapshot_every events"). A setting of the prefix, like history_len: None takes the prefix's (a new
            prefix gets min(16, history_len)); a value other than the prefix's is refused.

    Raises:
        InputError: a bad URL or setting; a history_len other than the one stored under the prefix.
        StoreUnavailableError: the server cannot be reached (on any call).
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", *, prefix: str = "t2arec", history_len: int = 200,
                 ttl_s: Optional[float] = None, socket_timeout_s: float = 2.0, connect_timeout_s: float = 0.5,
                 retries: int = 2, retry_backoff_s: float = 0.05, max_connections: int = 32,
                 max_cas_retries: int = 64, snapshot_every: Optional[int] = None):
        redis = _redis()
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry
        self.url = _check_url(url)
        self.prefix = _check_prefix(prefix)
        self.history_len = _positive_int(history_len, "history_len")
        self.ttl_ms = 0 if ttl_s is None else _positive_int(round(float(ttl_s) * 1000), "ttl_s (in ms)")
        self.max_cas_retries = _positive_int(max_cas_retries, "max_cas_retries")
        self._asked_snapshot_every = snapshot_every
        self.snapshot_every = (min(SNAPSHOT_EVERY, self.history_len) if snapshot_every is None
                               else _positive_int(snapshot_every, "snapshot_every"))   # the prefix's, once connected
        if self.snapshot_every > self.history_len:
            raise InputError(f"RedisStateStore: snapshot_every={snapshot_every} exceeds history_len="
                             f"{self.history_len}: the events after a stored state must still be in the ring")
        for name, value in (("socket_timeout_s", socket_timeout_s), ("connect_timeout_s", connect_timeout_s),
                            ("retry_backoff_s", retry_backoff_s)):
            if not float(value) > 0:
                raise InputError(f"RedisStateStore: {name} must be > 0, got {value!r}")
        if int(retries) < 0:
            raise InputError(f"RedisStateStore: retries must be >= 0, got {retries!r}")
        self.settings = {"socket_timeout_s": float(socket_timeout_s), "connect_timeout_s": float(connect_timeout_s),
                         "retries": int(retries), "retry_backoff_s": float(retry_backoff_s),
                         "max_connections": int(max_connections)}
        self._packer = _one_buffer_packer(redis)
        try:
            pool = redis.BlockingConnectionPool.from_url(
                self.url, max_connections=int(max_connections), timeout=float(socket_timeout_s),
                # replies that ship states carry 10 KB per user: read them in 1 MB pieces (redis-py's 64 KB
                # default made a 1,024-user read cost ~40 ms of client CPU instead of ~16; no change at batch 1)
                socket_read_size=1 << 20,
                command_packer=self._packer,
                socket_timeout=float(socket_timeout_s), socket_connect_timeout=float(connect_timeout_s),
                retry=Retry(ExponentialBackoff(cap=10 * float(retry_backoff_s), base=float(retry_backoff_s)),
                            int(retries)),
                retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError])
        except ValueError as exc:
            raise InputError(f"RedisStateStore: bad URL {self.url!r}: {exc}") from None
        self._redis = redis.Redis(connection_pool=pool)
        self._scripts = {name: self._redis.register_script(code) for name, code in
                         (("read", _READ), ("commit", _COMMIT), ("put_states", _PUT_STATES), ("forget", _FORGET),
                          ("register", _REGISTER), ("user_indices", _USER_INDICES), ("config", _CONFIG))}
        self._state_sizes: dict = {}             # model version -> floats per state, checked against the store
        self.counters = {"round_trips": 0, "commits": 0, "cas_conflicts": 0, "states_written_back": 0}
        self._check_config()

    # -- keys --------------------------------------------------------------------------------------------------
    def _key(self, *parts) -> str:
        return ":".join((self.prefix,) + tuple(str(p) for p in parts))

    def _user_keys(self, users: np.ndarray) -> List[str]:
        """hash, ring, hash, ring, ... for each user."""
        keys = []
        for u in users.tolist():
            keys += (f"{self.prefix}:u:{u}", f"{self.prefix}:r:{u}")
        return keys

    def state_key(self, user: int, version: int, stamp: int) -> str:
        """The key of a user's state for a model version, written by the call that drew `stamp`."""
        return f"{self.prefix}:s:{user}:{version}:{stamp}"

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

    def _script_after_states(self, name: str, state_keys: Sequence[str], states: np.ndarray,
                             keys: Sequence[str], args: Sequence, all_new: bool,
                             meanwhile: Optional[Callable[[], Any]] = None):
        """One round trip, one Redis transaction (MULTI/EXEC: run whole or not at all, nothing in between): the
        states under their keys, never over a state already there, then the script, which adopts them or deletes
        them; -> (the script's reply, what meanwhile() returned and raised: see _transaction). all_new: the keys
        are this call's own (a commit's stamp is in them), so one MSETNX (all or none) writes them; otherwise (a
        rebuilt state may already be there, written by another process for the same user, version and stamp) one
        SET NX each.
        EVAL, not EVALSHA: a server that lost its script cache (a restart) would otherwise store the states and
        refuse the script that adopts them."""
        flat = memoryview(np.ascontiguousarray(states).reshape(-1).view(np.uint8))
        row = len(flat) // max(len(state_keys), 1)
        rows = [flat[i * row:(i + 1) * row] for i in range(len(state_keys))]
        if all_new and state_keys:
            commands = [("MSETNX", *[x for pair in zip(state_keys, rows) for x in pair])]
        else:
            commands = [("SET", key, value, "NX") for key, value in zip(state_keys, rows)]
        commands.append(("EVAL", self._scripts[name].script, len(keys), *keys, *args))
        return self._call(name, self._transaction, commands, meanwhile)

    def _transaction(self, commands: list, meanwhile: Optional[Callable[[], Any]]):
        """MULTI, `commands`, EXEC, sent as one buffer; then meanwhile() runs in this thread while Redis executes
        them (and, with `appendfsync always`, waits for the disk); then the replies are read. -> (the last
        command's reply, meanwhile's result, meanwhile's error: an Exception it raised, returned and not raised
        because the caller must learn the transaction's outcome either way; None, None without meanwhile).
        Why not redis-py's pipeline: it sends and reads in one call, and the time between is the commit's largest
        part (docs/serving.md, "The answer is computed while Redis applies the commit"). A connection error or
        timeout is retried as the pool's Retry says (the commands must be safe to send twice: a commit's
        done-marker, SET NX) and meanwhile runs once; a BaseException in it (KeyboardInterrupt) drops the
        connection unread and propagates.

        Raises: redis' ConnectionError / TimeoutError after the retries, ResponseError (mapped by _call)."""
        redis = _redis()
        pool = self._redis.connection_pool
        ran = []

        def attempt():
            conn.send_packed_command(packed, check_health=False)
            if not ran:                             # once, however often the transaction is sent
                ran.append(_run(meanwhile))
            return _exec_reply(conn, len(commands), redis)

        conn = pool.get_connection()
        try:
            # the whole transaction as one buffer, its states copied once (not once per command, then again)
            packed = [b"".join(piece for command in (("MULTI",), *commands, ("EXEC",))
                               for piece in self._packer.pieces(*command))]
            reply = conn.retry.call_with_retry(attempt, lambda error: conn.disconnect())
        except BaseException:
            conn.disconnect()                       # an unread reply must not reach the pool's next user
            raise
        finally:
            pool.release(conn)
        return (reply, *ran[0])

    # -- set-up --------------------------------------------------------------------------------------------------
    def ping(self) -> bool:
        return bool(self._call("ping", self._redis.ping))

    def _check_config(self) -> None:
        """The prefix's history_len, key layout (STORE_FORMAT) and snapshot_every must be this store's (a
        snapshot_every not given is taken from the prefix); a new prefix gets all three."""
        key = self._key("config")
        stored_len, stored_format, stored_every = self._script("config", [key], [self.history_len, STORE_FORMAT,
                                                                                 self.snapshot_every])
        if not (stored_len or b"").isdigit():
            raise StoreCorruptError(f"{key} field 'history_len' holds {stored_len!r}, not a number of events")
        if stored_format != str(STORE_FORMAT).encode():
            found = stored_format.decode(errors="replace") if stored_format else 1
            raise InputError(f"RedisStateStore: the keys under prefix {self.prefix!r} at {self._where()} are in "
                             f"layout {found} ({key} field 'format'), this version reads layout {STORE_FORMAT}: "
                             f"delete them (redis-cli --scan --pattern '{self.prefix}:*' | xargs redis-cli unlink) "
                             f"or use another prefix")
        if int(stored_len) != self.history_len:
            raise InputError(f"RedisStateStore: {key} says history_len={stored_len.decode()}; "
                             f"this store was opened with history_len={self.history_len}. Every process on a "
                             f"prefix must keep the same number of events per user")
        if not (stored_every or b"").isdigit() or not 1 <= int(stored_every) <= self.history_len:
            raise StoreCorruptError(f"{key} field 'snapshot_every' holds {stored_every!r}, not a number of events "
                                    f"in 1..history_len")
        if self._asked_snapshot_every is not None and int(stored_every) != self.snapshot_every:
            raise InputError(f"RedisStateStore: {key} says snapshot_every={stored_every.decode()}; this store was "
                             f"opened with snapshot_every={self.snapshot_every}. Every process on a prefix must "
                             f"store states at the same counts (or pass snapshot_every=None to take the prefix's)")
        self.snapshot_every = int(stored_every)

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
             rings: str = "missing", top_k: int = 0, local_epochs: Optional[np.ndarray] = None,
             local_counts: Optional[np.ndarray] = None, replay_limit: Optional[int] = None) -> StoreRead:
        """One atomic read of distinct users (m,) int64 for model `version`.

        The caller's local copy of each user's state: local_stamps (m,) int64, the stamp it carries (0: none), with
        local_epochs and local_counts (m,) int64, the user's epoch and event count it was computed for. A user
        whose local copy is current gets nothing shipped; one whose copy is behind by at most `replay_limit` events
        (default: snapshot_every, or 0 when that is 1) gets those events; any other gets the version's stored state
        and the events after it (if at most history_len), or all its events when it has at most history_len and
        no usable stored state — or else only its ring, to rebuild from. rings: "all" ships every known user's
        ring, "missing" only those the state must be rebuilt from, "none" never. top_k > 0 also returns the k most
        observed items.

        Raises: StoreCorruptError naming the key of an unreadable value; InputError for an unregistered version;
        StoreUnavailableError.
        """
        size, H = self.state_size(version), self.history_len
        m = len(users)
        mine = np.zeros(m, _LOCAL_RECORD)
        for name, values in (("w", local_stamps), ("e", local_epochs), ("n", local_counts)):
            mine[name] = (np.zeros(m, np.int64) if values is None else np.asarray(values, np.int64)).astype(
                _LOCAL_RECORD[name])
        # with a state stored on every commit nothing is replayed: every process serves the committer's bits
        limit = (0 if self.snapshot_every == 1 else self.snapshot_every) if replay_limit is None else int(replay_limit)
        reply = self._script("read", [self._key("pop")], [int(version), self.prefix, rings, int(top_k), 4 * size, H,
                                                          _msgpack_decimals(mine), limit, _msgpack_decimals(users)])
        records = np.frombuffer(reply[0], _READ_RECORD)
        hashes = [f"{self.prefix}:u:{u}" for u in users.tolist()]
        got = _empty_read(m, size, H)
        got.known[:] = records["known"] == b"1"
        known = np.flatnonzero(got.known)
        where = [hashes[i] for i in known]
        got.n_events[known] = _int_column(records["n"][known], where, "n", minimum=1)
        got.last_ts[known] = _int_column(records["t"][known], where, "t")
        got.stamps[known] = _int_column(records["w"][known], where, "w", minimum=1)
        status = records["status"]
        got.local_current[:], got.replay_local[:] = status == b"1", status == b"3"
        got.shipped[:], got.replay_empty[:] = status == b"2", status == b"4"
        got.epochs[known] = _int_column(records["e"][known], where, "e", minimum=1)   # (the script refuses none)
        stored = np.flatnonzero(got.known & (records["sn"].astype("S1") != b" "))    # sw and sn: checked there too
        got.snapshot_counts[stored] = records["sn"][stored].astype(np.int64)
        shipped = np.flatnonzero(got.shipped)
        if len(shipped):
            got.snapshot_stamps[shipped] = records["sw"][shipped].astype(np.int64)
            state_keys = [self.state_key(users[i], version, got.snapshot_stamps[i]) for i in shipped]
            got.states[shipped] = np.frombuffer(b"".join(reply[1]), "<f4").reshape(len(shipped), size)
            _check_finite(got.states[shipped], state_keys)
        replayed = np.flatnonzero(got.shipped | got.replay_local | got.replay_empty)
        _unpack_events(got, replayed, reply[3])
        got.has_ring[:] = records["ring"] == b"1"
        ring = _padded_rings(reply[2], H)
        got.ring_items[got.has_ring], got.ring_times[got.has_ring] = ring["item"], ring["time"]
        if top_k:
            got.popular = _popular(reply[4], self._key("pop"))
        return got


    # -- commit --------------------------------------------------------------------------------------------------
    def commit(self, users: np.ndarray, version: int, expected_stamps: np.ndarray, n_before: np.ndarray,
               counts: np.ndarray, last_ts: np.ndarray, states: np.ndarray, event_user: np.ndarray,
               event_rank: np.ndarray, items: np.ndarray, times: np.ndarray, stamp: Optional[int] = None,
               snapshot: Optional[np.ndarray] = None, meanwhile: Optional[Callable[[], Any]] = None
               ) -> CommitOutcome:
        """Store the batch if every user still carries `expected_stamps` (0: a user believed new); else nothing.

        users (U,) distinct int64; n_before, counts, last_ts (U,) int64: events before the call, events in it, the
        new last timestamp; states (U, size) float32: the new states, of which only the rows where `snapshot` (U,)
        bool is True are stored (default: all; `snapshot_rows` gives the store's rule) — for the others the
        stored state stays and the ring holds the events after it. Events (n,): event_user = index into users,
        event_rank = rank among that user's events in the call (call order), items, times. `stamp`: pass the same
        value again to retry a call whose outcome is unknown (it is applied at most once). `meanwhile`: a function of
        no arguments run after the commit is sent and before its reply is read (while Redis applies it); what it
        returns or raises (an Exception) is the outcome's meanwhile_result / meanwhile_error, whatever the
        outcome — its error is not raised here, so that the caller learns whether the batch was applied.

        Raises: StoreCorruptError, StoreUnavailableError, InputError (unregistered version or wrong state size).
        """
        size = self.state_size(version)
        states = np.ascontiguousarray(states, dtype="<f4")
        if states.shape != (len(users), size):
            raise InputError(f"commit: states of shape {states.shape}, expected {(len(users), size)}")
        if not len(users):
            result, error = _run(meanwhile)
            return CommitOutcome(True, np.zeros(0, np.int64), stamp or 0, meanwhile_result=result,
                                 meanwhile_error=error)
        stamp = _check_stamp(stamp) if stamp is not None else new_stamp()
        H = self.history_len
        kept = np.minimum(counts, H)                     # only each user's last H events land in its ring
        first = counts - kept                            # rank of the first of them
        snapshot = np.ones(len(users), bool) if snapshot is None else np.asarray(snapshot, bool)
        per_user = np.stack([np.asarray(expected_stamps, np.int64), n_before + counts, np.asarray(last_ts, np.int64),
                             (n_before + first) % H, kept, snapshot], axis=1).astype(np.int64)  # script's ARGV 8
        keep = event_rank >= first[event_user]
        order = np.lexsort((event_rank[keep], event_user[keep]))        # user by user, in call order
        records = np.empty(len(order), RING_RECORD)
        records["item"], records["time"] = items[keep][order], times[keep][order]
        popular_items, popular_counts = np.unique(items, return_counts=True)
        popular = np.empty((len(popular_items), 2), f"S{FIELD}")          # per item: member, count
        popular[:, 0] = _zero_padded(popular_items)
        popular[:, 1] = popular_counts.astype(f"S{FIELD}")
        sent = np.flatnonzero(snapshot)
        reply, result, error = self._script_after_states(
            "commit", [self.state_key(u, version, stamp) for u in users[sent].tolist()], states[sent],
            [self._key("pop"), self._key("done", stamp)],
            [int(version), self.prefix, str(stamp), self.ttl_ms, int(version) - 1, H, records.tobytes(),
             _msgpack_decimals(per_user), _msgpack_decimals(popular), _msgpack_decimals(np.asarray(users, np.int64)),
             self.snapshot_every],
            all_new=True, meanwhile=meanwhile)
        self.counters["commits"] += 1
        if reply[0] == 0:
            self.counters["cas_conflicts"] += 1
            return CommitOutcome(False, np.asarray(reply[1:], np.int64) - 1, stamp, meanwhile_result=result,
                                 meanwhile_error=error)
        return CommitOutcome(True, np.zeros(0, np.int64), stamp, np.asarray(reply[1:], np.int64) - 1, result, error)

    def snapshot_rows(self, n_before: np.ndarray, n_after: np.ndarray) -> np.ndarray:
        """(U,) bool: the users whose new state a commit stores — those whose event count passes a multiple of
        snapshot_every (so a stored state is never more than snapshot_every - 1 events behind, whatever the
        batching)."""
        return np.asarray(n_before) // self.snapshot_every != np.asarray(n_after) // self.snapshot_every

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
        stamps = np.asarray(stamps, np.int64)
        state_keys = [self.state_key(u, version, w) for u, w in zip(users.tolist(), stamps.tolist())]
        keys = [k for pair in zip(self._user_keys(users)[0::2], state_keys) for k in pair]
        written = int(self._script_after_states("put_states", state_keys, states, keys,
                                                [int(version), self.prefix, _decimal(stamps), int(version) - 1],
                                                all_new=False)[0])
        self.counters["states_written_back"] += written
        return written

    def forget(self, users: np.ndarray) -> int:
        """Remove users entirely (every version's state, count, ring); -> how many were known."""
        keys = self._user_keys(users)
        return int(self._script("forget", keys, [self.prefix])) if keys else 0

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
                "snapshot_every": self.snapshot_every,
                "ttl_s": self.ttl_ms / 1000 if self.ttl_ms else None, **self.settings}

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()

    def __repr__(self) -> str:
        return f"RedisStateStore({self._where()!r}, prefix={self.prefix!r}, history_len={self.history_len})"


def _redis():
    from t2arec_fast.optional import require
    return require("redis", "redis", "The Redis state store")


def _msgpack():
    from t2arec_fast.optional import require
    return require("msgpack", "redis", "The Redis state store")


def _one_buffer_packer(redis):
    """redis-py's own RESP serializer, its pieces joined into one buffer per command. redis-py sends every
    argument over 6,000 bytes with a separate sendall(), so the 64 states of a commit went out as 128 writes,
    each waking the server for a partial read: 1.0-1.7 ms for a 64 x 10 KB MULTI/MSETNX/EVAL against 0.56-0.60 ms
    joined (one copy of the 640 KB costs ~50 us). Connection(command_packer=...) is redis-py's hook for this."""
    from redis.connection import Encoder, PythonRespSerializer

    class OneBuffer(PythonRespSerializer):
        def pack(self, *args):
            return [b"".join(super().pack(*args))]

        def pieces(self, *args):
            """redis-py's pieces of one command, not joined (for joining several commands at once)."""
            return super().pack(*args)

    return OneBuffer(6000, Encoder(encoding="utf-8", encoding_errors="strict", decode_responses=False).encode)


def _run(meanwhile: Optional[Callable[[], Any]]) -> Tuple[Any, Optional[Exception]]:
    """-> (meanwhile(), None), or (None, the Exception it raised); (None, None) without one."""
    if meanwhile is None:
        return None, None
    try:
        return meanwhile(), None
    except Exception as exc:                   # returned: the caller must still learn the commit's outcome
        return None, exc


def _exec_reply(conn, n_commands: int, redis):
    """Read a MULTI/EXEC transaction's replies from conn: OK, one QUEUED per command, then EXEC's array -> the
    last command's reply. A command refused when queued aborts the transaction (nothing ran): its error is raised;
    an error the last command returned when run is raised too (the others' replies are not used)."""
    refused = []
    for _ in range(n_commands + 1):
        try:
            conn.read_response()
        except redis.exceptions.ResponseError as exc:
            refused.append(exc)
    try:
        replies = conn.read_response()
    except redis.exceptions.ExecAbortError:
        raise (refused[0] if refused else redis.exceptions.ResponseError("EXECABORT without a refused command")) \
            from None
    if refused or not isinstance(replies, list) or len(replies) != n_commands:
        raise redis.exceptions.ResponseError(f"a transaction of {n_commands} commands got the replies "
                                             f"{str(replies)[:200]} ({refused[:1]})")
    if isinstance(replies[-1], Exception):
        raise replies[-1]
    return replies[-1]


# -- decoding with checks: every refusal names the key ------------------------------------------------------------
def _empty_read(m: int, size: int, H: int) -> StoreRead:
    return StoreRead(known=np.zeros(m, bool), n_events=np.zeros(m, np.int64), last_ts=np.full(m, INT64_MIN),
                     stamps=np.zeros(m, np.int64), local_current=np.zeros(m, bool), shipped=np.zeros(m, bool),
                     states=np.zeros((m, size), np.float32), has_ring=np.zeros(m, bool),
                     ring_items=np.zeros((m, H), np.int64), ring_times=np.zeros((m, H), np.int64),
                     epochs=np.zeros(m, np.int64), snapshot_counts=np.full(m, -1, np.int64),
                     snapshot_stamps=np.zeros(m, np.int64),
                     replay_local=np.zeros(m, bool), replay_empty=np.zeros(m, bool),
                     event_from=np.zeros(m, np.int64), event_user=np.zeros(0, np.int64),
                     event_items=np.zeros(0, np.int64), event_times=np.zeros(0, np.int64))


def _unpack_events(got: StoreRead, replayed: np.ndarray, blobs: list) -> None:
    """The read's shipped events (one blob per replayed user, in user order) into got.event_*."""
    events = np.frombuffer(b"".join(blobs), RING_RECORD)
    lengths = np.array([len(b) // RING_RECORD.itemsize for b in blobs], np.int64)
    got.event_user = np.repeat(replayed, lengths)
    got.event_items = events["item"].astype(np.int64)
    got.event_times = events["time"].astype(np.int64)
    got.event_from[replayed] = got.n_events[replayed] - lengths


def _padded_rings(rings: list, H: int) -> np.ndarray:
    """The read script's rings (each as stored: at most H records of 12 bytes, unfilled slots absent at the end)
    -> (len(rings), H) RING_RECORD, zero-padded."""
    out = np.zeros((len(rings), H), RING_RECORD)
    for j, ring in enumerate(rings):
        records = np.frombuffer(ring, RING_RECORD)
        out[j, :len(records)] = records
    return out


def _msgpack_decimals(values: np.ndarray) -> bytes:
    """int64 values (any shape, row by row), or records of FIELD-byte decimal fields, in order, as a MessagePack
    array of their decimal strings: what the scripts' numbers() unpacks (Redis' cmsgpack; see the note above the
    scripts). Packed by the msgpack library as raw strings: Redis' cmsgpack refuses MessagePack's bin type.

    Raises: ValueError for an empty field (a number the script would read as nil)."""
    if values.dtype.kind == "i":
        fields = [str(v) for v in values.ravel().tolist()]
    else:
        fields = values.view(f"S{FIELD}").ravel().tolist()          # (numpy drops an S field's trailing NULs)
        if b"" in fields:
            raise ValueError("_msgpack_decimals: an empty field")
    return _msgpack().packb(fields, use_bin_type=False)


def _zero_padded(items: np.ndarray) -> np.ndarray:
    """(n,) item ids in 0 .. 10^ITEM_DIGITS − 1 → their popularity members: ITEM_DIGITS-digit decimal, zero-padded
    (the digits of 10^ITEM_DIGITS + id after its leading 1: 10x faster than np.char.zfill)."""
    text = (np.asarray(items, np.int64) + 10 ** _ITEM_DIGITS).astype(f"S{_ITEM_DIGITS + 1}")
    return np.ascontiguousarray(text.view("S1").reshape(-1, _ITEM_DIGITS + 1)[:, 1:]).view(f"S{_ITEM_DIGITS}")[:, 0]


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


def _check_finite(states: np.ndarray, keys: List[str]) -> None:
    bad = np.argwhere(~np.isfinite(states))
    if len(bad):
        row, position = bad[0]
        raise StoreCorruptError(f"{keys[row]} holds a non-finite value at position {int(position)}")


def _popular(flat: list, key: str) -> Tuple[np.ndarray, np.ndarray]:
    try:
        items = np.array([int(m) for m in flat[0::2]], np.int64)
        counts = np.array([-float(s) for s in flat[1::2]]).astype(np.int64)
    except (TypeError, ValueError):
        raise StoreCorruptError(f"{key} holds members that are not item ids with counts") from None
    return items, counts


def new_stamp() -> int:
    """A fresh commit stamp: a random int in 1 .. 2^63 − 1 (the key layout in this module's docstring)."""
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
    """Non-empty, no spaces, and none of SCAN's pattern characters * ? [ ] \\ (n_users() and clear() match
    '<prefix>:*': a prefix 'a*' would match, and clear() delete, the keys of prefix 'ab')."""
    if (not isinstance(prefix, str) or not prefix or any(c.isspace() for c in prefix)
            or any(c in "*?[]\\" for c in prefix)):
        raise InputError(f"RedisStateStore: prefix must be a non-empty string without spaces or any of * ? [ ] \\, "
                         f"got {prefix!r}")
    return prefix


def _check_stamp(stamp) -> int:
    """A commit stamp passed in (to retry a call): an int in 1 .. 2^63 − 1, what the scripts read back."""
    if isinstance(stamp, bool) or not isinstance(stamp, (int, np.integer)) or not 1 <= int(stamp) < 2 ** 63:
        raise InputError(f"commit: stamp must be an integer in 1 .. 2**63 - 1 (the one an earlier call returned), "
                         f"got {stamp!r}")
    return int(stamp)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InputError(f"RedisStateStore: {name} must be a positive integer, got {value!r}")
    return int(value)
