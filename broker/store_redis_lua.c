/*  store_redis_lua: the Redis store's server-side scripts and its entry
 *  encoding (shared/SCALEOUT.md §2). No state; any thread (the backend's thread
 *  is the only caller).
 *
 *  Keys (every key of user u carries the hash tag {u}, so one script sees
 *  only its user's slot):
 *    cw:u:{u}   hash: created_us, acked, last (highest seq), ct (creator)
 *    cw:q:{u}   stream, ids 0-<seq> from XADD 0-* (dense from 1; kept
 *               across XTRIM, so seq keeps its meaning)
 *    cw:d:{u}:<sender>:<mid>  string "<seq>|<writer token>" (dedupe)
 *    cw:s:{u}   hash: b, inc, tok, ts (the session's owner)
 *    cw:c:{u}   hash: own, clock (the resume clock)
 *    cw:n:{u}   shard channel: "E<seq>,..." entry, "L<barrier>,<frame>"
 *               live frame, "T<broker> <inc>" takeover of that owner
 *
 *  Invariants of the scripts:
 *    1. Every check comes before the first write: Redis does not roll a
 *       script back on error, so a refused request has changed nothing.
 *    2. Each is idempotent for a re-run by the same writer (the store
 *       re-runs a primary's commands after a short WAIT): APPEND finds its
 *       own dedupe record (same writer token: not a duplicate), ADD_USER
 *       its own creator token, CLAIM its own owner fields, ACK an acked
 *       seq not above the current one.
 *  The entry's checksum (crc field: CRC-32 over every content field, each
 *  preceded by its 4-byte length) is made and checked here, in C; a stored
 *  entry that does not parse or fails it is served as CW_DAMAGED.
 */
#include "store_redis_int.h"

#include "cw_status.h"
#include "cw_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

const char *const rs_field_names[N_FIELDS] = {"from", "mid", "to",   "bcast", "ts",
                                              "exp",  "clock", "text", "w",   "crc"};

/* Lua shared by the scripts that remove expired entries (put in front
 * of each): drop(stream, dedupe key prefix, entries, now_us, window_ms)
 * XDELs the entries whose exp is set and <= now_us, gives their dedupe
 * keys the expiry an ack gives (max(now, receipt + window)), and returns
 * how many it removed. */
#define LUA_DROP \
    "local function drop(stream, dprefix, es, now, win)\n" \
    "  local n = 0\n" \
    "  for _, e in ipairs(es) do\n" \
    "    local f = e[2]\n" \
    "    local from, mid, ts, exp\n" \
    "    for i = 1, #f, 2 do\n" \
    "      if f[i] == 'exp' then exp = tonumber(f[i + 1])\n" \
    "      elseif f[i] == 'from' then from = f[i + 1]\n" \
    "      elseif f[i] == 'mid' then mid = f[i + 1]\n" \
    "      elseif f[i] == 'ts' then ts = f[i + 1] end\n" \
    "    end\n" \
    "    if exp and exp > 0 and exp <= now then\n" \
    "      redis.call('XDEL', stream, e[1])\n" \
    "      n = n + 1\n" \
    "      if from and mid and mid ~= '' then\n" \
    "        local at = math.floor((tonumber(ts) or 0) / 1000) + win\n" \
    "        local nowms = math.floor(now / 1000)\n" \
    "        if at < nowms then at = nowms end\n" \
    "        redis.call('PEXPIREAT', dprefix .. from .. ':' .. mid, string.format('%.0f', at))\n" \
    "      end\n" \
    "    end\n" \
    "  end\n" \
    "  return n\n" \
    "end\n"

const char *const rs_scripts[N_SCRIPTS] = {
    /* SC_APPEND. KEYS: user hash, stream, dedupe key, channel. ARGV: quota,
     * writer token, dedupe PX (0: none), "<now_us>,<dedupe window ms>", then
     * field/value pairs. The queue holds last - acked - gone entries (gone:
     * expired ones removed above acked); a full queue first removes its
     * expired entries, at most once a second (reclaim: when it last did),
     * as the SQLite store does. */
    [SC_APPEND] =
        LUA_DROP
        "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
        "local d = redis.call('GET', KEYS[3])\n"
        "if d then\n"
        "  local sep = string.find(d, '|', 1, true) or (#d + 1)\n"
        "  return {1, tonumber(string.sub(d, 1, sep - 1)) or 0, string.sub(d, sep + 1)}\n"
        "end\n"
        "local h = redis.call('HMGET', KEYS[1], 'acked', 'last', 'gone', 'reclaim')\n"
        "local acked = tonumber(h[1]) or 0\n"
        "local last = tonumber(h[2]) or 0\n"
        "local gone = tonumber(h[3]) or 0\n"
        "local q = tonumber(ARGV[1])\n"
        "if q > 0 and last - acked - gone >= q then\n"
        "  local sep = string.find(ARGV[4], ',', 1, true)\n"
        "  local now = tonumber(string.sub(ARGV[4], 1, sep - 1))\n"
        "  local win = tonumber(string.sub(ARGV[4], sep + 1))\n"
        "  if now >= (tonumber(h[4]) or 0) + 1000000 then\n"
        "    redis.call('HSET', KEYS[1], 'reclaim', string.format('%.0f', now))\n"
        "    local n = drop(KEYS[2], 'cw:d:' .. string.sub(KEYS[1], 6) .. ':',\n"
        "                   redis.call('XRANGE', KEYS[2], '0-' .. string.format('%.0f', acked + 1), '+'),\n"
        "                   now, win)\n"
        "    if n > 0 then\n"
        "      gone = gone + n\n"
        "      redis.call('HSET', KEYS[1], 'gone', string.format('%.0f', gone))\n"
        "    end\n"
        "  end\n"
        "  if last - acked - gone >= q then return {-2} end\n"
        "end\n"
        "local id = redis.call('XADD', KEYS[2], '0-*', unpack(ARGV, 5))\n"
        "local seq = tonumber(string.sub(id, 3))\n"
        "redis.call('HSET', KEYS[1], 'last', string.format('%.0f', seq))\n"
        "if ARGV[3] ~= '0' then\n"
        "  redis.call('SET', KEYS[3], string.format('%.0f', seq) .. '|' .. ARGV[2], 'PX', ARGV[3])\n"
        "else\n"
        "  redis.call('SET', KEYS[3], string.format('%.0f', seq) .. '|' .. ARGV[2])\n"
        "end\n"
        "local t = {'E' .. string.format('%.0f', seq)}\n"
        "for i = 5, #ARGV do t[#t + 1] = #ARGV[i] .. ':' .. ARGV[i] end\n"
        "redis.call('SPUBLISH', KEYS[4], table.concat(t, ','))\n"
        "return {0, seq}\n",
    /* SC_ACK. KEYS: user hash, stream. ARGV: up_to, retention, now_ms,
     * dedupe window ms, dedupe key prefix. {0|-1|-3, pending, newly acked};
     * the expired entries removed in (acked, up] leave gone. */
    [SC_ACK] =
        "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1, 0} end\n"
        "local h = redis.call('HMGET', KEYS[1], 'acked', 'last', 'gone')\n"
        "local acked = tonumber(h[1]) or 0\n"
        "local last = tonumber(h[2]) or 0\n"
        "local gone = tonumber(h[3]) or 0\n"
        "local up = tonumber(ARGV[1])\n"
        "if up > last then return {-3, last - acked - gone} end\n"
        "if up <= acked then return {0, last - acked - gone} end\n"
        "local now = tonumber(ARGV[3])\n"
        "local win = tonumber(ARGV[4])\n"
        "local es = redis.call('XRANGE', KEYS[2], '0-' .. string.format('%.0f', acked + 1),\n"
        "                      '0-' .. string.format('%.0f', up))\n"
        "for _, e in ipairs(es) do\n"
        "  local f = e[2]\n"
        "  local from, mid, ts\n"
        "  for i = 1, #f, 2 do\n"
        "    if f[i] == 'from' then from = f[i + 1]\n"
        "    elseif f[i] == 'mid' then mid = f[i + 1]\n"
        "    elseif f[i] == 'ts' then ts = f[i + 1] end\n"
        "  end\n"
        "  if from and mid and mid ~= '' then\n"
        "    local at = math.floor((tonumber(ts) or 0) / 1000) + win\n"
        "    if at < now then at = now end\n"
        "    redis.call('PEXPIREAT', ARGV[5] .. from .. ':' .. mid, string.format('%.0f', at))\n"
        "  end\n"
        "end\n"
        "local gone_in = (up - acked) - #es\n"
        "if gone_in > gone then gone_in = gone end\n"
        "gone = gone - gone_in\n"
        "redis.call('HSET', KEYS[1], 'acked', string.format('%.0f', up), 'gone',\n"
        "           string.format('%.0f', gone))\n"
        "local minid = up - tonumber(ARGV[2]) + 1\n"
        "if minid > 1 then\n"
        "  redis.call('XTRIM', KEYS[2], 'MINID', '0-' .. string.format('%.0f', minid))\n"
        "end\n"
        "return {0, last - up - gone, up - acked - gone_in}\n",
    /* SC_READ. KEYS: user hash, stream. ARGV: from, max. {0, acked, last,
     * entries, gone}. */
    [SC_READ] =
        "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
        "local h = redis.call('HMGET', KEYS[1], 'acked', 'last', 'gone')\n"
        "local acked = tonumber(h[1]) or 0\n"
        "local last = tonumber(h[2]) or 0\n"
        "local from = tonumber(ARGV[1])\n"
        "if from <= acked then from = acked + 1 end\n"
        "local es = {}\n"
        "if tonumber(ARGV[2]) > 0 and from <= last then\n"
        "  es = redis.call('XRANGE', KEYS[2], '0-' .. string.format('%.0f', from), '+',\n"
        "                  'COUNT', ARGV[2])\n"
        "end\n"
        "return {0, acked, last, es, tonumber(h[3]) or 0}\n",
    /* SC_HISTORY. KEYS: user hash, stream. ARGV: n. Newest first. */
    [SC_HISTORY] =
        "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
        "local h = redis.call('HMGET', KEYS[1], 'acked', 'last')\n"
        "local es = {}\n"
        "if tonumber(ARGV[1]) > 0 then\n"
        "  es = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[1])\n"
        "end\n"
        "return {0, tonumber(h[1]) or 0, tonumber(h[2]) or 0, es}\n",
    /* SC_ADD_USER. KEYS: user hash. ARGV: now_us, creator token. */
    [SC_ADD_USER] =
        "if redis.call('EXISTS', KEYS[1]) == 1 then\n"
        "  if redis.call('HGET', KEYS[1], 'ct') == ARGV[2] then return 1 end\n"
        "  return 0\n"
        "end\n"
        "redis.call('HSET', KEYS[1], 'created_us', ARGV[1], 'acked', '0', 'last', '0', 'ct', ARGV[2])\n"
        "return 1\n",
    /* SC_CLAIM. KEYS: session hash, channel. ARGV: expected b, inc, tok;
     * new b, inc, tok; takeover (1: publish it); now_us. 1 claimed (or
     * already this broker's: its token is replaced; or free now), 0 another
     * owner than the expected one holds it. */
    [SC_CLAIM] =
        "local h = redis.call('HMGET', KEYS[1], 'b', 'inc', 'tok')\n"
        "local b, inc, tok = h[1] or '', h[2] or '', h[3] or ''\n"
        "if b == ARGV[4] and inc == ARGV[5] then\n"
        "  if tok ~= ARGV[6] then redis.call('HSET', KEYS[1], 'tok', ARGV[6], 'ts', ARGV[8]) end\n"
        "  return 1\n"
        "end\n"
        "if b ~= '' and (b ~= ARGV[1] or inc ~= ARGV[2] or tok ~= ARGV[3]) then return 0 end\n"
        "redis.call('HSET', KEYS[1], 'b', ARGV[4], 'inc', ARGV[5], 'tok', ARGV[6], 'ts', ARGV[8])\n"
        "if ARGV[7] == '1' then redis.call('SPUBLISH', KEYS[2], 'T' .. ARGV[1] .. ' ' .. ARGV[2]) end\n"
        "return 1\n",
    /* SC_RELEASE. KEYS: session hash. ARGV: b, inc. */
    [SC_RELEASE] =
        "local h = redis.call('HMGET', KEYS[1], 'b', 'inc')\n"
        "if h[1] == ARGV[1] and h[2] == ARGV[2] then redis.call('DEL', KEYS[1]) return 1 end\n"
        "return 0\n",
    /* SC_LIVE. KEYS: session hash, user hash, channel. ARGV: b, inc, frame.
     * 1 published for another broker's session, 0 none (or ours). */
    [SC_LIVE] =
        "local h = redis.call('HMGET', KEYS[1], 'b', 'inc')\n"
        "if not h[1] then return 0 end\n"
        "if h[1] == ARGV[1] and h[2] == ARGV[2] then return 0 end\n"
        "local last = redis.call('HGET', KEYS[2], 'last') or '0'\n"
        "redis.call('SPUBLISH', KEYS[3], 'L' .. last .. ',' .. ARGV[3])\n"
        "return 1\n",
    /* SC_PEEK (read receipts). KEYS: user hash, stream. ARGV: up_to, max:
     * the entries an Ack up to up_to would acknowledge first. */
    [SC_PEEK] =
        "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
        "local h = redis.call('HMGET', KEYS[1], 'acked', 'last')\n"
        "local acked = tonumber(h[1]) or 0\n"
        "local up = tonumber(ARGV[1])\n"
        "local es = {}\n"
        "if up > acked then\n"
        "  es = redis.call('XRANGE', KEYS[2], '0-' .. string.format('%.0f', acked + 1),\n"
        "                  '0-' .. string.format('%.0f', up), 'COUNT', ARGV[2])\n"
        "end\n"
        "return {0, acked, tonumber(h[2]) or 0, es}\n",
    /* SC_DROP. KEYS: user hash, stream. ARGV: now_us, dedupe window ms,
     * seq... Removes those entries above acked whose TTL ran out by now_us
     * (reported CW_EXPIRED once: store_if.h READ), as the SQLite store
     * does. The number removed. */
    [SC_DROP] =
        LUA_DROP
        "if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end\n"
        "local acked = tonumber(redis.call('HGET', KEYS[1], 'acked')) or 0\n"
        "local es = {}\n"
        "for i = 3, #ARGV do\n"
        "  if tonumber(ARGV[i]) > acked then\n"
        "    local e = redis.call('XRANGE', KEYS[2], '0-' .. ARGV[i], '0-' .. ARGV[i])\n"
        "    if #e == 1 then es[#es + 1] = e[1] end\n"
        "  end\n"
        "end\n"
        "local n = drop(KEYS[2], 'cw:d:' .. string.sub(KEYS[1], 6) .. ':', es,\n"
        "               tonumber(ARGV[1]), tonumber(ARGV[2]))\n"
        "if n > 0 then redis.call('HINCRBY', KEYS[1], 'gone', n) end\n"
        "return n\n",
    /* SC_LEASE. KEYS: this broker's lease. ARGV: incarnation, done, PX,
     * mode, previous incarnation (reinc, drop). Modes:
     *   "take"  (at open) a previous run's lease is replaced;
     *   "renew" only a lease that is ours: 2 if it is gone (it lapsed, so
     *           other brokers may have taken this incarnation for dead);
     *   "reinc" (after a fence) the new incarnation ARGV[1] replaces the
     *           previous one ARGV[5], or a lease that is gone;
     *   "drop"  delete it if it is ours (ARGV[1] or ARGV[5]).
     * 1 done, 0 the lease is another incarnation's (a broker started
     * since under the same --broker-id). */
    [SC_LEASE] =
        "local cur = redis.call('HGET', KEYS[1], 'inc')\n"
        "local mine = cur == ARGV[1] or (ARGV[5] and ARGV[5] ~= '' and cur == ARGV[5])\n"
        "if ARGV[4] == 'drop' then\n"
        "  if mine then redis.call('DEL', KEYS[1]) return 1 end\n"
        "  return 0\n"
        "end\n"
        "if ARGV[4] == 'renew' then\n"
        "  if not cur then return 2 end\n"
        "  if cur ~= ARGV[1] then return 0 end\n"
        "elseif ARGV[4] == 'reinc' then\n"
        "  if cur and not mine then return 0 end\n"
        "elseif ARGV[4] ~= 'take' then\n"
        "  return redis.error_reply('bad lease mode')\n"
        "end\n"
        "redis.call('HSET', KEYS[1], 'inc', ARGV[1], 'done', ARGV[2])\n"
        "redis.call('PEXPIRE', KEYS[1], ARGV[3])\n"
        "return 1\n",
};



/* ------------------------------------------------------------------------ */

static uint32_t crc_field(uint32_t crc, const char *p, size_t len)
{
    unsigned char l[4] = {(unsigned char) len, (unsigned char) (len >> 8),
                          (unsigned char) (len >> 16), (unsigned char) (len >> 24)};
    crc = (uint32_t) crc32(crc, l, 4);
    return (uint32_t) crc32(crc, (const unsigned char *) p, (uInt) len);
}

/* The checksum over the content fields (F_FROM..F_TEXT). */
static uint32_t fields_crc(const char *const *v, const size_t *len)
{
    uint32_t crc = (uint32_t) crc32(0L, Z_NULL, 0);
    for (int i = F_FROM; i <= F_TEXT; i++)
        crc = crc_field(crc, v[i], len[i]);
    return crc;
}

int rs_fields_build(rs_fields_t *f, const cw_store_msg_t *m, uint64_t expires_us, const char *w)
{
    memset(f, 0, sizeof *f);
    size_t to_len = 0;
    if (!m->broadcast)
        for (size_t i = 0; i < m->n_rcpts; i++)
            to_len += 21 + strlen(m->rcpts[i].name);
    const char *mid = m->message_id ? m->message_id : "";
    size_t size = strlen(m->sender) + strlen(mid) + to_len + 2 + 21 + 21 + m->clock_len +
                  m->text_len + strlen(w) + 12 + N_FIELDS;
    f->buf = malloc(size);
    if (!f->buf)
        return -1;
    char *at = f->buf;
#define PUTF(i, p, l)                      \
    do {                                   \
        f->v[i] = at;                      \
        f->len[i] = (l);                   \
        if (l)                             \
            memcpy(at, (p), (l));          \
        at += (l);                         \
    } while (0)
    PUTF(F_FROM, m->sender, strlen(m->sender));
    PUTF(F_MID, mid, strlen(mid));
    f->v[F_TO] = at;
    if (!m->broadcast)
        for (size_t i = 0; i < m->n_rcpts; i++) {
            size_t nl = strlen(m->rcpts[i].name);
            at += sprintf(at, "%zu:", nl);
            memcpy(at, m->rcpts[i].name, nl);
            at += nl;
        }
    f->len[F_TO] = (size_t) (at - f->v[F_TO]);
    PUTF(F_BCAST, m->broadcast ? "1" : "0", 1);
    f->v[F_TS] = at;
    f->len[F_TS] = (size_t) sprintf(at, "%llu", (unsigned long long) m->timestamp_us);
    at += f->len[F_TS];
    f->v[F_EXP] = at;
    f->len[F_EXP] = (size_t) sprintf(at, "%llu", (unsigned long long) expires_us);
    at += f->len[F_EXP];
    PUTF(F_CLOCK, m->clock, m->clock_len);
    PUTF(F_TEXT, m->text, m->text_len);
    PUTF(F_W, w, strlen(w));
    f->v[F_CRC] = at;
    f->len[F_CRC] = (size_t) sprintf(at, "%lu", (unsigned long) fields_crc(f->v, f->len));
#undef PUTF
    return 0;
}

void rs_fields_free(rs_fields_t *f)
{
    free(f->buf);
    f->buf = NULL;
}

static int parse_u64(const char *s, size_t len, uint64_t *out)
{
    if (!len || len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        uint64_t d = (uint64_t) (s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int rs_w_parse(const char *s, size_t len, rs_w_t *w)
{
    const char *sp1 = memchr(s, ' ', len);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', len - (size_t) (sp1 + 1 - s)) : NULL;
    if (!sp1 || !sp2 || sp1 == s || sp2 == sp1 + 1)
        return -1;
    w->b = s;
    w->b_len = (size_t) (sp1 - s);
    w->inc = sp1 + 1;
    w->inc_len = (size_t) (sp2 - sp1 - 1);
    return parse_u64(sp2 + 1, len - (size_t) (sp2 + 1 - s), &w->batch);
}

static const char EMPTY[] = "";

static void damaged(cw_store_entry_t *e, uint64_t seq, uint64_t acked_seq)
{
    memset(e, 0, sizeof *e);
    e->seq = seq;
    e->acked = seq <= acked_seq;
    e->status = CW_DAMAGED;
    e->sender = e->message_id = e->text = EMPTY;
}

int rs_entry_decode(uint64_t seq, const char *const *fv, const size_t *fvlen, size_t nfv,
                    uint64_t acked_seq, uint64_t now_us, cw_store_entry_t *e, rs_w_t *w,
                    uint32_t *crc)
{
    const char *v[N_FIELDS] = {0};
    size_t len[N_FIELDS] = {0};
    int have[N_FIELDS] = {0};
    *crc = 0;
    for (size_t k = 0; k + 1 < nfv; k += 2)
        for (int i = 0; i < N_FIELDS; i++)
            if (fvlen[k] == strlen(rs_field_names[i]) &&
                memcmp(fv[k], rs_field_names[i], fvlen[k]) == 0) {
                v[i] = fv[k + 1];
                len[i] = fvlen[k + 1];
                have[i] = 1;
            }
    if (w) {
        memset(w, 0, sizeof *w);
        if (have[F_W])
            rs_w_parse(v[F_W], len[F_W], w);
    }
    uint64_t stored_crc = 0, ts = 0, exp = 0;
    int ok = 1;
    for (int i = 0; i < N_FIELDS; i++)
        ok = ok && (have[i] || i == F_W);
    ok = ok && parse_u64(v[F_CRC], len[F_CRC], &stored_crc) == 0 && stored_crc <= UINT32_MAX &&
         parse_u64(v[F_TS], len[F_TS], &ts) == 0 && parse_u64(v[F_EXP], len[F_EXP], &exp) == 0 &&
         len[F_BCAST] == 1 && (v[F_BCAST][0] == '0' || v[F_BCAST][0] == '1');
    if (ok)
        *crc = (uint32_t) stored_crc;
    ok = ok && fields_crc(v, len) == (uint32_t) stored_crc;
    ok = ok && cw_utf8_valid(v[F_FROM], len[F_FROM]) && cw_utf8_valid(v[F_MID], len[F_MID]) &&
         cw_utf8_valid(v[F_TEXT], len[F_TEXT]);
    /* The recipients: "<len>:<name>" repeated. */
    size_t n_to = 0;
    for (size_t off = 0; ok && off < len[F_TO];) {
        const char *colon = memchr(v[F_TO] + off, ':', len[F_TO] - off);
        uint64_t nl = 0;
        ok = colon && parse_u64(v[F_TO] + off, (size_t) (colon - v[F_TO] - off), &nl) == 0 &&
             nl <= len[F_TO] - (size_t) (colon + 1 - v[F_TO]) &&
             cw_utf8_valid(colon + 1, (size_t) nl);
        if (ok) {
            n_to++;
            off = (size_t) (colon + 1 - v[F_TO]) + (size_t) nl;
        }
    }
    if (!ok) {
        damaged(e, seq, acked_seq);
        return 0;
    }
    size_t size = n_to * sizeof(char *) + len[F_FROM] + 1 + len[F_MID] + 1 + len[F_TO] + n_to +
                  len[F_TEXT] + 1 + len[F_CLOCK] + 1;
    char *mem = malloc(size);
    if (!mem)
        return -1;
    memset(e, 0, sizeof *e);
    e->mem_ = mem;
    e->seq = seq;
    e->acked = seq <= acked_seq;
    e->broadcast = v[F_BCAST][0] == '1';
    e->timestamp_us = ts;
    e->expires_us = exp;
    const char **to = (const char **) (void *) mem;
    char *at = mem + n_to * sizeof(char *);
    e->sender = rs_put(&at, v[F_FROM], len[F_FROM]);
    e->message_id = rs_put(&at, v[F_MID], len[F_MID]);
    size_t k = 0;
    for (size_t off = 0; off < len[F_TO];) {
        const char *colon = memchr(v[F_TO] + off, ':', len[F_TO] - off);
        uint64_t nl = 0;
        parse_u64(v[F_TO] + off, (size_t) (colon - v[F_TO] - off), &nl);
        to[k++] = rs_put(&at, colon + 1, (size_t) nl);
        off = (size_t) (colon + 1 - v[F_TO]) + (size_t) nl;
    }
    e->to = n_to ? to : NULL;
    e->n_to = n_to;
    int expired = !e->acked && exp && now_us && exp <= now_us;
    e->status = expired ? CW_EXPIRED : CW_OK;
    e->text = rs_put(&at, v[F_TEXT], expired ? 0 : len[F_TEXT]);
    e->text_len = expired ? 0 : len[F_TEXT];
    const char *clock = rs_put(&at, v[F_CLOCK], len[F_CLOCK]);
    e->clock = len[F_CLOCK] ? (const uint8_t *) clock : NULL;
    e->clock_len = len[F_CLOCK];
    return 0;
}

int rs_entry_unpack(uint64_t seq, const char *p, size_t len, cw_store_entry_t *e, rs_w_t *w,
                    uint32_t *crc)
{
    const char *fv[2 * N_FIELDS + 2];
    size_t fvlen[2 * N_FIELDS + 2];
    size_t n = 0, off = 0;
    while (off < len) {
        if (p[off] != ',' || n == sizeof fv / sizeof fv[0])
            return -2;
        off++;
        const char *colon = memchr(p + off, ':', len - off);
        uint64_t l = 0;
        if (!colon || parse_u64(p + off, (size_t) (colon - p - off), &l) != 0 ||
            l > len - (size_t) (colon + 1 - p))
            return -2;
        fv[n] = colon + 1;
        fvlen[n] = (size_t) l;
        n++;
        off = (size_t) (colon + 1 - p) + (size_t) l;
    }
    return rs_entry_decode(seq, fv, fvlen, n, 0, 0, e, w, crc);
}
