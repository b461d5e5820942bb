"""The cluster's Lua scripts: each one is a single atomic Redis round trip (docs/cluster.md).

Keys (``P`` is the namespace prefix, ``{webgate}:`` by default; the hash tag keeps every key in
one Redis Cluster slot, so the scripts stay atomic there too):

- ``P nodes``: a set of node IDs that may be alive; a node is alive while ``P node:N`` exists;
- ``P node:N``: a hash of the node's public facts (URLs, SIP contact, load), expiring after
  ``node_ttl_s`` unless the heartbeat refreshes it; ``P node:N:calls`` (session ID -> call entry
  JSON), ``P node:N:ip`` / ``P node:N:identity`` (counts of the node's calls), ``P node:N:users``
  (web user -> registration JSON) expire with it: a dead node's calls, counts and users vanish;
- ``P sid:ID``: the node that holds session ID ``ID``. ``SET NX`` with the reuse window as TTL:
  a live call's claim is refreshed, a released one stays for the reuse window;
- ``P attempts:IP``: a sorted set of the IP's call attempts in the last 60 s (by Redis time);
- ``P prefix:NNN``: the node that owns local session-ID prefix NNN (``on_redis_down = "local"``).

Scripts reach keys they compute (the live nodes' hashes), so they are not declared in KEYS: fine
on one Redis (primary/replica, Sentinel); on Redis Cluster the shared hash tag keeps them legal.
"""

from __future__ import annotations

__all__ = ["ATTEMPT", "CLAIM", "HEARTBEAT", "LOOKUP_CALL", "LOOKUP_USER", "NEWER_ELSEWHERE", "NODES", "RELEASE",
           "REPUBLISH", "RESERVE"]

_PRELUDE = """
local P, me = ARGV[1], ARGV[2]
local function live_nodes()
  local out = {}
  for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
    if n == me or redis.call('EXISTS', P .. 'node:' .. n) == 1 then out[#out + 1] = n end
  end
  return out
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end
"""

#: ARGV: P, ip, max, window_ms -> {1, 0} counted | {0, retry_ms} refused (not counted)
ATTEMPT = _PRELUDE + """
local key = P .. 'attempts:' .. ARGV[2]
local max, win = tonumber(ARGV[3]), tonumber(ARGV[4])
local now, t = now_ms()
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - win)
local n = redis.call('ZCARD', key)
if n >= max then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {0, tonumber(oldest[2]) + win - now}
end
redis.call('ZADD', key, now, t[1] .. '.' .. t[2] .. '.' .. n)
redis.call('PEXPIRE', key, win)
return {1, 0}
"""

#: ARGV: P, node, sid, reuse_ms, ip, identity ('' = none), max_ip, max_identity, node_ttl_ms
#: -> {'ok', 0} | {'too_many_calls_from_ip', n} | {'too_many_calls_for_identity', n} | {'session_id_in_use', 0}
RESERVE = _PRELUDE + """
local sid, reuse, ip, ident = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local max_ip, max_id, ttl = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
redis.call('SADD', P .. 'nodes', me)
if max_ip > 0 or (ident ~= '' and max_id > 0) then
  local n_ip, n_id = 0, 0
  for _, n in ipairs(live_nodes()) do
    local base = P .. 'node:' .. n
    if max_ip > 0 then n_ip = n_ip + tonumber(redis.call('HGET', base .. ':ip', ip) or '0') end
    if ident ~= '' and max_id > 0 then
      n_id = n_id + tonumber(redis.call('HGET', base .. ':identity', ident) or '0')
    end
  end
  if max_ip > 0 and n_ip >= max_ip then return {'too_many_calls_from_ip', n_ip} end
  if ident ~= '' and max_id > 0 and n_id >= max_id then return {'too_many_calls_for_identity', n_id} end
end
if not redis.call('SET', P .. 'sid:' .. sid, me, 'NX', 'PX', reuse) then return {'session_id_in_use', 0} end
local base = P .. 'node:' .. me
redis.call('HINCRBY', base .. ':ip', ip, 1)
redis.call('PEXPIRE', base .. ':ip', ttl)
if ident ~= '' then
  redis.call('HINCRBY', base .. ':identity', ident, 1)
  redis.call('PEXPIRE', base .. ':identity', ttl)
end
return {'ok', 0}
"""

#: ARGV: P, node, reuse_ms, sid, sid, ... -> the session IDs claimed (``SET NX``) for the node's pool
CLAIM = _PRELUDE + """
local out = {}
for i = 4, #ARGV do
  if redis.call('SET', P .. 'sid:' .. ARGV[i], me, 'NX', 'PX', ARGV[3]) then out[#out + 1] = ARGV[i] end
end
return out
"""

#: ARGV: P, node, sid, reuse_ms, ip ('' = none), identity ('' = none) -> 1
RELEASE = _PRELUDE + """
local sid, reuse, ip, ident = ARGV[3], tonumber(ARGV[4]), ARGV[5], ARGV[6]
local base = P .. 'node:' .. me
redis.call('HDEL', base .. ':calls', sid)
for _, kv in ipairs({{':ip', ip}, {':identity', ident}}) do
  if kv[2] ~= '' and redis.call('HINCRBY', base .. kv[1], kv[2], -1) <= 0 then
    redis.call('HDEL', base .. kv[1], kv[2])
  end
end
local k = P .. 'sid:' .. sid
if redis.call('GET', k) == me then redis.call('PEXPIRE', k, reuse) end
return 1
"""

#: ARGV: P, node, node_ttl_ms, local prefix ('' = none), then field, value, ... of the node hash
#: -> {existed (0|1: the node's keys were there), prefix_ok (0|1), redis time ms}
HEARTBEAT = _PRELUDE + """
local ttl, prefix = tonumber(ARGV[3]), ARGV[4]
local base = P .. 'node:' .. me
local existed = redis.call('EXISTS', base)
local now = now_ms()
redis.call('HSET', base, 'seen_ms', now, unpack(ARGV, 5))
for _, s in ipairs({'', ':calls', ':ip', ':identity', ':users'}) do redis.call('PEXPIRE', base .. s, ttl) end
redis.call('SADD', P .. 'nodes', me)
for _, n in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
  if redis.call('EXISTS', P .. 'node:' .. n) == 0 then redis.call('SREM', P .. 'nodes', n) end
end
local prefix_ok = 1
if prefix ~= '' then
  local k = P .. 'prefix:' .. prefix
  local owner = redis.call('GET', k)
  if owner == false or owner == me then redis.call('SET', k, me, 'PX', ttl) else prefix_ok = 0 end
end
return {existed, prefix_ok, now}
"""

#: ARGV: P, node, node_ttl_ms, JSON {"calls": {sid: entry}, "ip": {ip: n}, "identity": {id: n},
#: "users": {user: entry}, "sids": {sid: ttl_ms}} -> the session IDs another node holds (conflicts)
REPUBLISH = _PRELUDE + """
local ttl = tonumber(ARGV[3])
local state = cjson.decode(ARGV[4])
local base = P .. 'node:' .. me
for _, part in ipairs({'calls', 'ip', 'identity', 'users'}) do
  local key = base .. ':' .. part
  redis.call('DEL', key)
  for k, v in pairs(state[part]) do redis.call('HSET', key, k, v) end
  redis.call('PEXPIRE', key, ttl)
end
local conflicts = {}
for sid, ms in pairs(state['sids']) do
  local k = P .. 'sid:' .. sid
  if not redis.call('SET', k, me, 'NX', 'PX', ms) then
    if redis.call('GET', k) == me then redis.call('PEXPIRE', k, ms) else conflicts[#conflicts + 1] = sid end
  end
end
redis.call('SADD', P .. 'nodes', me)
return conflicts
"""

#: ARGV: P, '', sid -> false | {node, entry JSON, {node hash field, value, ...}}
LOOKUP_CALL = _PRELUDE + """
local sid = ARGV[3]
local node = redis.call('GET', P .. 'sid:' .. sid)
if not node then return false end
local base = P .. 'node:' .. node
if redis.call('EXISTS', base) == 0 then return false end
local entry = redis.call('HGET', base .. ':calls', sid)
if not entry then return false end
return {node, entry, redis.call('HGETALL', base)}
"""

#: ARGV: P, '', user -> false | {node, entry JSON, {node hash...}}: the newest registration among live nodes
LOOKUP_USER = _PRELUDE + """
local user = ARGV[3]
local best, best_at, best_node = false, -1, false
for _, n in ipairs(live_nodes()) do
  local v = redis.call('HGET', P .. 'node:' .. n .. ':users', user)
  if v then
    local at = tonumber(cjson.decode(v)['at']) or 0
    if at > best_at then best, best_at, best_node = v, at, n end
  end
end
if not best then return false end
return {best_node, best, redis.call('HGETALL', P .. 'node:' .. best_node)}
"""

#: ARGV: P, '', with_calls (0|1) -> {{node, {node hash...}, n_calls, n_users, {sid, entry, ...}}, ...}
NODES = _PRELUDE + """
local out = {}
for _, n in ipairs(live_nodes()) do
  local base = P .. 'node:' .. n
  local calls = {}
  if ARGV[3] == '1' then calls = redis.call('HGETALL', base .. ':calls') end
  out[#out + 1] = {n, redis.call('HGETALL', base), redis.call('HLEN', base .. ':calls'),
                   redis.call('HLEN', base .. ':users'), calls}
end
return out
"""

#: ARGV: P, node, user, user, ... -> the users (of this node) whose newest registration is on
#: another live node (their SIP binding here must stop being refreshed: newest wins)
NEWER_ELSEWHERE = _PRELUDE + """
local mine = P .. 'node:' .. me .. ':users'
local nodes = live_nodes()
local out = {}
for i = 3, #ARGV do
  local u = ARGV[i]
  local v = redis.call('HGET', mine, u)
  local at = -1
  if v then at = tonumber(cjson.decode(v)['at']) or 0 end
  for _, n in ipairs(nodes) do
    if n ~= me then
      local w = redis.call('HGET', P .. 'node:' .. n .. ':users', u)
      if w and (tonumber(cjson.decode(w)['at']) or 0) > at then
        out[#out + 1] = u
        break
      end
    end
  end
end
return out
"""
