import { createHash } from "node:crypto";
import { errorMonitor } from "node:events";
import type { Cluster, Redis } from "ioredis";
import { SessionConfigError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { checkTimeout } from "./internal/timeout.js";
import { checkStoreArguments } from "./internal/option-keys.js";

/** Where {@link redisStore} gets its connection: your own client, or a URL it connects to itself. */
export type RedisConnection =
	/**
	 * An ioredis `Redis` or `Cluster` you created; the store never closes it, and adds no `error`
	 * listener to it (give it your own: the store's errors then name its last connection error).
	 */
	| { client: Redis | Cluster }
	/** A `redis://` or `rediss://` URL; the store loads ioredis, connects, and `close()` quits. */
	| { url: string };

/** Options of {@link redisStore}. */
export interface RedisStoreOptions {
	/**
	 * Put before every key the store writes. No whitespace, control characters, `{` or `}`
	 * (the store adds its own Redis Cluster hash tags).
	 * @default "sess:"
	 */
	prefix?: string;
	/**
	 * Seconds an operation may take before it rejects with `SessionStoreError`, above 0 and at
	 * most 2147483. The command itself is not cancelled; the request just stops waiting for it.
	 * @default 5
	 */
	timeout?: number;
}

// Key layout (see docs/stores/redis.md):
//   <prefix>{<key>}              hash: one session; "{<key>}" is its Redis Cluster hash tag
//   <prefix>subject:{<subject>}  sorted set: keys of the subject's sessions, scored by the
//                                latest instant each can live (its absolute deadline)
// A session and its subject index hash to different slots, so on Redis Cluster no command
// touches both. The index is written first, then the session, each atomic on its own: a
// failure between them leaves an extra index member, never a session its subject cannot find
// (which would escape "log out everywhere"). On a standalone server one script writes both, in
// the same order, in one round trip. Members are checked against the live session on every
// read; a dead one is pruned by a script that checks again (standalone), or on a Cluster once
// its score passes, as one that looks dead there may be a write still in flight.
//
// A hash rather than one JSON string: merge becomes HSET/HDEL on "d:<name>" and "f:<name>"
// fields inside a Lua script, with no JSON parsing in Lua (cjson would turn {} into [] and
// round numbers to 14 digits), and touch rewrites two small fields instead of the whole record.
// Meta fields: c createdAt, i idleExpiresAt, a absoluteExpiresAt, e expiresAt, s subject.

// Helpers shared by the scripts. Times are compared against the app's clock (ARGV), not the
// server's, so a record is dead at exactly the `expiresAt` the core asked for.
const LUA_PRELUDE = `
local function alive(key, now)
	local e = tonumber(redis.call('HGET', key, 'e'))
	return e ~= nil and e > now
end
`;

// Writes a whole record: the fields from ARGV[first] on, in name/value pairs. The caller has
// already refused a replace of a dead session.
const WRITE_FUNCTION = `
local function write(key, expiresAt, first)
	redis.call('DEL', key)
	-- One HSET for all the fields: half the Redis CPU of one HSET per field for a login session;
	-- chunked, as unpack has a stack limit (4000 is even, so no pair is split).
	for n = first, #ARGV, 4000 do redis.call('HSET', key, unpack(ARGV, n, math.min(n + 3999, #ARGV))) end
	redis.call('PEXPIREAT', key, expiresAt)
	return 1
end
`;

// Adds a session to its subject's index, scored by the latest instant it can live; prunes the
// dead members and keeps the index alive as long as its longest-lived member.
const INDEX_FUNCTION = `
local function index(key, now, score, member)
	redis.call('ZADD', key, score, member)
	redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
	local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
	if last[2] then redis.call('PEXPIREAT', key, last[2]) end
end
`;

/** ARGV: now, mode ("set" | "replace"), expiresAt, field, value, ... */
const WRITE = `${WRITE_FUNCTION}
if ARGV[2] == 'replace' and not alive(KEYS[1], tonumber(ARGV[1])) then return 0 end
return write(KEYS[1], ARGV[3], 4)
`;

/**
 * Standalone Redis only (the two keys hash to different cluster slots): the index and the
 * session in one script, one round trip. KEYS: the session, the subject index. ARGV: now, mode,
 * expiresAt, index score, session id, field, value, ... A replace of a dead session indexes nothing.
 */
const INDEXED_WRITE = `${WRITE_FUNCTION}${INDEX_FUNCTION}
local now = tonumber(ARGV[1])
if ARGV[2] == 'replace' and not alive(KEYS[1], now) then return 0 end
index(KEYS[2], now, ARGV[4], ARGV[5])
return write(KEYS[1], ARGV[3], 6)
`;

/**
 * ARGV: now, expiresAt, idleExpiresAt, a head, the subject, then the items of five lists: delete
 * names, set name/value pairs, increment name/amount pairs, flash-delete names, flash-set
 * name/value pairs. The head is clear ("1"/"0"), the subject mode ("k" keep, "n" null, "s" set)
 * and the five lists' lengths: "0k 0 0 1 0 0" for one increment. One argument instead of seven:
 * ioredis spends about 0.1 µs on each. Applies the lists in the order RecordChanges documents.
 */
const MERGE_HEAD = `
local key, now = KEYS[1], tonumber(ARGV[1])
if not alive(key, now) then return 0 end
`;

const MERGE_BODY = `
local head = ARGV[4]
local lengths = {}
for length in string.gmatch(string.sub(head, 4), '%d+') do lengths[#lengths + 1] = tonumber(length) end
local pos = 5
local function take() pos = pos + 1; return ARGV[pos] end
-- JavaScript's white space and line terminators in UTF-8, all of which Number() trims.
local SPACES = { '[\\t-\\r ]', '\\194\\160', '\\225\\154\\128', '\\226\\128[\\128-\\138\\168\\169\\175]', '\\226\\129\\159', '\\227\\128\\128', '\\239\\187\\191' }
local function trim(text)
	local before
	repeat
		before = text
		for _, space in ipairs(SPACES) do
			text = string.gsub(text, '^' .. space, '')
			text = string.gsub(text, space .. '$', '')
		end
	until text == before
	return text
end
local function isDecimal(text)
	local mantissa = string.match(text, '^[+-]?([%d.]+)$') or string.match(text, '^[+-]?([%d.]+)[eE][+-]?%d+$')
	return mantissa ~= nil and (string.find(mantissa, '^%d+%.?%d*$') or string.find(mantissa, '^%.%d+$')) ~= nil
end
-- Binary or octal digits as a hex literal of the same value, which tonumber rounds correctly:
-- four digits make one hex digit (binary) or three (octal).
local function toHex(digits, base)
	local width = base == 2 and 1 or 3
	digits = string.rep('0', (4 - #digits % 4) % 4) .. digits
	local hex = {}
	for n = 1, #digits, 4 do hex[#hex + 1] = string.format('%0' .. width .. 'x', tonumber(string.sub(digits, n, n + 3), base)) end
	return '0x' .. table.concat(hex)
end
-- The stored value as the core's applyChanges reads it, with Number(); not a finite number
-- counts as 0. Lua's tonumber alone reads "-0x10", "0x1p3" and "1\\0x" as numbers, "0b11" and
-- "0o17" not, and trims no Unicode space: a custom codec can store any of these.
local function number(value)
	if not value then return 0 end -- HGET of a missing field
	local n
	if string.find(value, '^-?%d+$') then n = tonumber(value) -- what String(n) writes for an integer
	else
		local text = trim(value)
		local radix, digits = string.match(text, '^0([xXbBoO])(.+)$')
		radix = radix and string.lower(radix)
		if isDecimal(text) or (radix == 'x' and string.find(digits, '^%x+$')) then n = tonumber(text)
		elseif radix == 'b' and string.find(digits, '^[01]+$') then n = tonumber(toHex(digits, 2))
		elseif radix == 'o' and string.find(digits, '^[0-7]+$') then n = tonumber(toHex(digits, 8)) end
	end
	if n == nil or n ~= n or n == math.huge or n == -math.huge then return 0 end
	return n
end
-- Shortest form that reads back as the same double, like JavaScript's String(n).
local function format(n)
	-- A sum past the largest double: Lua prints "inf", JavaScript "Infinity".
	if n == math.huge then return 'Infinity' elseif n == -math.huge then return '-Infinity' end
	for digits = 15, 16 do
		local s = string.format('%.' .. digits .. 'g', n)
		if tonumber(s) == n then return s end
	end
	return string.format('%.17g', n)
end
if string.sub(head, 1, 1) == '1' then
	for _, field in ipairs(redis.call('HKEYS', key)) do
		if string.sub(field, 1, 2) == 'd:' then redis.call('HDEL', key, field) end
	end
end
for _ = 1, lengths[1] do redis.call('HDEL', key, 'd:' .. take()) end
for _ = 1, lengths[2] do
	local field = 'd:' .. take()
	redis.call('HSET', key, field, take())
end
for _ = 1, lengths[3] do
	local field = 'd:' .. take()
	local by = tonumber(take())
	redis.call('HSET', key, field, format(number(redis.call('HGET', key, field)) + by))
end
for _ = 1, lengths[4] do redis.call('HDEL', key, 'f:' .. take()) end
for _ = 1, lengths[5] do
	local field = 'f:' .. take()
	redis.call('HSET', key, field, take())
end
local subjectMode = string.sub(head, 2, 2)
if subjectMode == 'n' then redis.call('HDEL', key, 's')
elseif subjectMode == 's' then redis.call('HSET', key, 's', ARGV[5]) end
redis.call('HSET', key, 'i', ARGV[3], 'e', ARGV[2])
redis.call('PEXPIREAT', key, ARGV[2])
return 1
`;

const MERGE = MERGE_HEAD + MERGE_BODY;

/**
 * Standalone Redis only: a merge that sets the subject, with the index written first, in one
 * script. KEYS: the session, the new subject's index. ARGV: as MERGE, then the session id. The
 * index score is the later of the stored absolute deadline and the new expiry (both kept as the
 * strings they came in, so no number formatting can change them).
 */
const INDEXED_MERGE = `${INDEX_FUNCTION}${MERGE_HEAD}
local absolute = redis.call('HGET', key, 'a')
local score = ARGV[2]
if absolute and tonumber(absolute) > tonumber(score) then score = absolute end
index(KEYS[2], now, score, ARGV[#ARGV])
${MERGE_BODY}`;

/** ARGV: now, idleExpiresAt, expiresAt. */
const TOUCH = `
local key, now = KEYS[1], tonumber(ARGV[1])
if not alive(key, now) then return 0 end
redis.call('HSET', key, 'i', ARGV[2], 'e', ARGV[3])
redis.call('PEXPIREAT', key, ARGV[3])
return 1
`;

/**
 * KEYS: the session, then (standalone only) the subject's index. ARGV: now, subject, session id.
 * Deletes the session if it still has that subject: resolves 1 if it was live, 2 if it was dead
 * already, 0 if it deleted nothing. With the index, it also drops the member there whenever the
 * session is not (or no longer) one of the subject's, checked in the same script.
 */
const DELETE_IF_SUBJECT = `
local key, now = KEYS[1], tonumber(ARGV[1])
if redis.call('HGET', key, 's') ~= ARGV[2] then
	if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
	return 0
end
local live = alive(key, now)
redis.call('DEL', key)
if KEYS[2] then redis.call('ZREM', KEYS[2], ARGV[3]) end
if live then return 1 end
return 2
`;

/**
 * Standalone Redis only. KEYS: the subject's index, then sessions. ARGV: now, the subject, then
 * the id of each session. Drops the member of each session that is gone, dead, or another
 * subject's, checked in the same script: a member is never dropped on what an earlier read saw
 * (a session can move back to the subject in between, and its member would be lost for good).
 */
const PRUNE = `
local index, now, subject = KEYS[1], tonumber(ARGV[1]), ARGV[2]
for n = 2, #KEYS do
	if redis.call('HGET', KEYS[n], 's') ~= subject or not alive(KEYS[n], now) then redis.call('ZREM', index, ARGV[n + 1]) end
end
return 1
`;

/** KEYS: the subject index. ARGV: now, score (latest instant the session can live), session key. */
const INDEX = `${INDEX_FUNCTION}
index(KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3])
return 1
`;

/**
 * KEYS: the session. The hash as one JSON string, or nil: {"c":…,"i":…,"a":…,"e":…,"s":…,
 * "d":{name: value},"f":{name: value}}. One reply element for the client to decode where HGETALL
 * gives two a field: for a login session (13 fields) that halves the client's CPU a load, as
 * ioredis decodes each element in JavaScript. Every value is a string, so cjson's number
 * handling never applies, and a table with only string keys is always a JSON object (`{}` when
 * empty).
 */
const LOAD = `
local fields = redis.call('HGETALL', KEYS[1])
if #fields == 0 then return false end
local record, data, flash = {}, {}, {}
for n = 1, #fields, 2 do
	local name, value = fields[n], fields[n + 1]
	local kind = string.sub(name, 1, 2)
	if kind == 'd:' then data[string.sub(name, 3)] = value
	elseif kind == 'f:' then flash[string.sub(name, 3)] = value
	else record[name] = value end
end
record.d, record.f = data, flash
return cjson.encode(record)
`;

interface Script {
	source: string;
	sha: string;
}

function script(body: string, prelude = LUA_PRELUDE): Script {
	const source = prelude + body;
	return { source, sha: createHash("sha1").update(source).digest("hex") };
}

const scripts = {
	write: script(WRITE),
	indexedWrite: script(INDEXED_WRITE),
	merge: script(MERGE),
	indexedMerge: script(INDEXED_MERGE),
	touch: script(TOUCH),
	deleteIfSubject: script(DELETE_IF_SUBJECT),
	prune: script(PRUNE),
	index: script(INDEX),
	load: script(LOAD, ""),
};

/** The commands the store uses, which `Redis` and `Cluster` share. */
type Client = Pick<Redis, "evalsha" | "eval" | "evalsha_ro" | "eval_ro" | "hget" | "hmget" | "del" | "zrangebyscore" | "zrem" | "scan" | "quit" | "disconnect">;

function validatePrefix(prefix: unknown): string {
	if (typeof prefix !== "string" || !/^[^\s\p{Cc}{}]{1,128}$/u.test(prefix)) {
		throw new SessionConfigError(
			"prefix",
			`must be 1 to 128 characters without whitespace, control characters, "{" or "}" (the store adds Redis Cluster hash tags), got ${JSON.stringify(prefix)}.`,
		);
	}
	return prefix;
}


/** Escapes Redis glob characters, so a prefix such as "app*:" matches only itself in SCAN. */
function escapeGlob(text: string): string {
	return text.replace(/[*?[\]\\]/g, "\\$&");
}

function toFields(record: StoredRecord, expiresAt: number): string[] {
	const fields = ["c", String(record.createdAt), "i", String(record.idleExpiresAt), "a", String(record.absoluteExpiresAt), "e", String(expiresAt)];
	if (record.subject !== null) fields.push("s", record.subject);
	for (const [name, value] of Object.entries(record.data)) fields.push(`d:${name}`, value);
	for (const [name, value] of Object.entries(record.flash)) fields.push(`f:${name}`, value);
	return fields;
}

/** The load script's answer as the core's record, or `null` for none or a dead one. */
function fromLoaded(json: string, now: number): StoredRecord | null {
	const loaded = JSON.parse(json) as { c?: string; i: string; a: string; e: string; s?: string; d: Record<string, string>; f: Record<string, string> };
	if (!(Number(loaded.e) > now) || loaded.c === undefined) return null;
	// JSON.parse makes a "__proto__" name an own property, as data, like every other name.
	return {
		data: loaded.d,
		flash: loaded.f,
		createdAt: Number(loaded.c),
		idleExpiresAt: Number(loaded.i),
		absoluteExpiresAt: Number(loaded.a),
		subject: loaded.s ?? null,
	};
}

/** Appends the pairs name, value, name, value...; returns how many pairs. */
function pushPairs(args: Array<string | number>, record: Readonly<Record<string, string | number>>): number {
	const names = Object.keys(record);
	for (const name of names) args.push(name, record[name]!);
	return names.length;
}

/** The merge script's ARGV (see MERGE). */
function mergeArgs(now: number, changes: RecordChanges, expiresAt: number): Array<string | number> {
	const subjectMode = changes.subject === undefined ? "k" : changes.subject === null ? "n" : "s";
	const args: Array<string | number> = [now, expiresAt, changes.idleExpiresAt, "", changes.subject ?? ""];
	for (const name of changes.delete) args.push(name);
	const sets = pushPairs(args, changes.set);
	const increments = pushPairs(args, changes.increment);
	for (const name of changes.flashDelete) args.push(name);
	const flashSets = pushPairs(args, changes.flashSet);
	args[3] = `${changes.clear ? "1" : "0"}${subjectMode} ${changes.delete.length} ${sets} ${increments} ${changes.flashDelete.length} ${flashSets}`;
	return args;
}

/** A script's integer reply: ioredis's `stringNumbers` option makes it a string ("1"). */
const integerReply = (reply: unknown): number => Number(reply);

const isOne = (reply: unknown): boolean => integerReply(reply) === 1;

/**
 * `error` as the store's error: ours pass through, anything else becomes `SessionStoreError`.
 * An error that is not Redis's reply (ioredis's "Reached the max retries per request limit…"
 * names neither server nor cause) gets `server()` appended.
 */
function storeError(operation: string, error: unknown, server: () => string): Error {
	if (error instanceof SessionStoreError || error instanceof SessionConfigError) return error;
	let detail = error instanceof Error ? error.message : String(error);
	if (!(error instanceof Error && error.name === "ReplyError")) detail += server();
	return new SessionStoreError("redis", `${operation} failed: ${detail}`, { cause: error });
}

/** A client's last connection error, as far as the store heard it. */
interface ErrorLog {
	last?: Error;
}

/** One log per client passed in, shared by every store on it: one monitor a client, however many stores. */
const passedInLogs = new WeakMap<object, ErrorLog>();

/**
 * The log of a client passed in, fed by an `events.errorMonitor` listener. A monitor is not an
 * `error` listener: ioredis emits "error" only to a client with a listener of its own, and
 * prints "[ioredis] Unhandled error event" otherwise, and a monitor changes neither. So the
 * store learns a connection error exactly when the app listens too, and the app keeps its
 * warning when it does not. (A plain listener would have silenced that warning for good.)
 */
function passedInLog(client: Redis): ErrorLog {
	let log = passedInLogs.get(client);
	if (log === undefined) {
		const created: ErrorLog = {};
		log = created;
		passedInLogs.set(client, created);
		if (typeof client.on === "function") {
			client.on(errorMonitor, (error: unknown) => {
				if (error instanceof Error) created.last = error;
			});
		}
	}
	return log;
}

/** " (Redis at host:port)" for a standalone client, with its last connection error if known; "" for a Cluster. */
function describeServer(client: Client | null, lastError: Error | undefined): string {
	const redis = client as Partial<Redis> | null;
	if (redis?.options === undefined || redis.isCluster) return "";
	const { host, port, path, sentinels, name } = redis.options;
	const where = path ? path : sentinels ? `Sentinel master "${name ?? ""}"` : `${host ?? "localhost"}:${port ?? 6379}`;
	// Only while disconnected: once ready again, the last error belongs to an outage that ended.
	const cause = lastError && redis.status !== "ready" ? `; last connection error: ${lastError.message}` : "";
	return ` (Redis at ${where}${cause})`;
}

async function connect(url: string, onError: (error: Error) => void): Promise<Redis> {
	let ioredis;
	try {
		ioredis = await import("ioredis");
	} catch (error) {
		throw new SessionConfigError("url", `needs the "ioredis" package to connect: npm install ioredis (or pass { client }).`, { cause: error });
	}
	// A command the connection dropped unanswered may have run: ioredis would send it again once
	// reconnected (an increment would count twice). Not resent, it is never answered either, so it
	// is rejected when the connection closes (maxRetriesPerRequest 0), as is a command queued while
	// reconnecting once that attempt fails: a request waits for one reconnect, never for an outage.
	const client = new ioredis.Redis(url, { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false });
	// Connection errors reach callers as SessionStoreError (with the last one's message); without
	// a listener ioredis would also print each one.
	client.on("error", onError);
	return client;
}

/**
 * Sessions in Redis (standalone or Redis Cluster) through ioredis. Records expire natively at
 * their deadline (PEXPIREAT), so no gc is needed; `get` still checks the deadline against the
 * app's clock. `merge` runs as one Lua script, so parallel requests keep each other's changes.
 * Sessions are indexed by subject for "log out everywhere".
 *
 * Pass your own client to control retries, TLS and timeouts. Set `autoResendUnfulfilledCommands:
 * false`: by default ioredis sends a command again when the connection dropped before its answer
 * came, and a merge the server had already run would then apply twice (an increment counts
 * twice). With `maxRetriesPerRequest: 0` such a command fails at once instead of at `timeout`,
 * and an outage fails requests instead of piling them up. On a Cluster, put both in
 * `redisOptions` and set `clusterNodeRetryStrategy`: without it a node's dropped connection
 * ends, and the Cluster resends its commands itself (`retryDelayOnFailover`).
 * The store never closes a client you pass in, and adds no `error` listener to it: give it your
 * own, as ioredis prints every error of a client without one. A failure that is not Redis's reply
 * names the server and, once you listen, the client's last connection error, as with `{ url }`
 * (the store reads it through `events.errorMonitor`, which sees only what your listener sees).
 * With `{ url }` it loads ioredis itself, and a missing ioredis package makes every operation
 * reject with `SessionConfigError`. Your client's `keyPrefix` option goes before `prefix` in
 * every key.
 *
 * Throws `SessionConfigError` for a bad `prefix` or `timeout`, or an option it does not know (in
 * either argument).
 *
 * @example
 * import { Redis } from "ioredis";
 * const client = new Redis(process.env.REDIS_URL, { maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false });
 * const sessions = createSessions({ store: redisStore({ client }, { prefix: "myapp:sess:" }) });
 */
export function redisStore(connection: RedisConnection, options: RedisStoreOptions = {}): AsyncSessionStore {
	checkStoreArguments("redisStore", connection, ["client", "url"], options, ["prefix", "timeout"]);
	const prefix = validatePrefix(options.prefix ?? "sess:");
	const timeoutMs = checkTimeout(options.timeout, 5) * 1000;

	let ready: Promise<Client>;
	/** The client once `ready` has it: operations then skip a wait on `ready`. */
	let connected: Client | null = null;
	let owned = false;
	/**
	 * The client's last connection error: from the store's own listener on a client it created,
	 * from a monitor (see passedInLog) on yours. A Cluster's is never shown, so never kept.
	 */
	let errors: ErrorLog = {};
	if ("client" in connection && connection.client) {
		if (typeof (connection.client as Partial<Client>).evalsha !== "function") {
			throw new SessionConfigError("client", "must be an ioredis Redis or Cluster instance.");
		}
		if (!connection.client.isCluster) errors = passedInLog(connection.client as Redis);
		connected = connection.client as unknown as Client;
		ready = Promise.resolve(connected);
	} else if ("url" in connection && typeof connection.url === "string" && connection.url !== "") {
		owned = true;
		ready = connect(connection.url, (error) => {
			errors.last = error;
		});
		ready.then(
			(client) => {
				connected = client;
			},
			() => {}, // surfaces at the first operation; see the TSDoc
		);
	} else {
		throw new SessionConfigError("connection", "must be { client } (an ioredis Redis or Cluster) or { url }.");
	}
	const cluster = "client" in connection && connection.client.isCluster ? (connection.client as Cluster) : undefined;

	const server = (): string => describeServer(connected, errors.last);

	const sessionKey = (key: string): string => `${prefix}{${key}}`;
	const indexKey = (subject: string): string => `${prefix}subject:{${subject}}`;

	/** `work`'s result; `SessionStoreError` when it fails or takes longer than `timeout`. */
	function run<T>(operation: string, work: (client: Client) => Promise<T>): Promise<T> {
		return new Promise<T>((resolve, reject) => {
			const timer = setTimeout(() => reject(new SessionStoreError("redis", `${operation} got no answer within ${timeoutMs / 1000} s. Is Redis reachable?${server()}`)), timeoutMs);
			let pending: Promise<T>;
			try {
				pending = connected === null ? ready.then(work) : work(connected);
			} catch (error) {
				pending = Promise.reject(error);
			}
			pending.then(
				(value) => {
					clearTimeout(timer);
					resolve(value);
				},
				(error: unknown) => {
					clearTimeout(timer);
					reject(storeError(operation, error, server));
				},
			);
		});
	}

	async function evaluate(client: Client, { source, sha }: Script, keys: string | string[], args: Array<string | number>): Promise<unknown> {
		const keyList = typeof keys === "string" ? [keys] : keys;
		// One array, which ioredis flattens: spread into the call, a record of some 60,000 fields
		// overflows the stack ("Maximum call stack size exceeded").
		const keysAndArgs = [...keyList, ...args] as string[];
		try {
			return await client.evalsha(sha, keyList.length, keysAndArgs);
		} catch (error) {
			// The script cache is per server and emptied by a restart or SCRIPT FLUSH.
			if (!(error instanceof Error) || !error.message.startsWith("NOSCRIPT")) throw error;
			return client.eval(source, keyList.length, keysAndArgs);
		}
	}

	// EVALSHA_RO (Redis 7+) says the script only reads: a replica may run it, and it never counts as
	// a write. An older server answers "unknown command" once; from then on plain EVALSHA.
	let readOnlyScripts = true;

	async function evaluateReadOnly(client: Client, script: Script, key: string): Promise<unknown> {
		if (readOnlyScripts) {
			try {
				return await client.evalsha_ro(script.sha, 1, key);
			} catch (error) {
				if (!(error instanceof Error)) throw error;
				if (error.message.startsWith("NOSCRIPT")) return client.eval_ro(script.source, 1, key);
				if (!/unknown command/i.test(error.message)) throw error;
				readOnlyScripts = false;
			}
		}
		return evaluate(client, script, key, []);
	}

	/**
	 * The cluster's masters, once the client is ready. Before that ioredis lists none (or, while
	 * the slot map loads, its startup nodes, replicas included).
	 */
	async function masters(cluster: Cluster): Promise<Client[]> {
		// A lazyConnect client connects at its first command, and none is sent before it is ready.
		if (cluster.status === "wait") cluster.connect().catch(() => {});
		if (cluster.status !== "ready" && cluster.status !== "end") {
			await new Promise<void>((resolve) => {
				const done = (): void => {
					clearTimeout(timer);
					cluster.off("ready", done).off("end", done);
					resolve();
				};
				// run() has rejected by then; this only drops the listeners.
				const timer = setTimeout(done, timeoutMs);
				// "end": closed for good (quit, or out of retries), so never ready.
				cluster.on("ready", done).on("end", done);
			});
		}
		const nodes = cluster.nodes("master");
		if (nodes.length === 0) throw new SessionStoreError("redis", `count failed: the Cluster client knows no masters (status "${cluster.status}").`);
		return nodes;
	}

	async function index(client: Client, subject: string, key: string, livesUntil: number): Promise<void> {
		await evaluate(client, scripts.index, indexKey(subject), [Date.now(), livesUntil, key]);
	}

	/** The subject's indexed session ids whose absolute deadline has not passed. */
	async function members(client: Client, subject: string): Promise<string[]> {
		return client.zrangebyscore(indexKey(subject), `(${Date.now()}`, "+inf");
	}

	async function write(client: Client, mode: "set" | "replace", key: string, record: StoredRecord, expiresAt: number): Promise<boolean> {
		const now = Date.now();
		const fields = toFields(record, expiresAt);
		if (record.subject === null) return isOne(await evaluate(client, scripts.write, sessionKey(key), [now, mode, expiresAt, ...fields]));
		// The absolute deadline bounds every later touch, so the index never needs updating again.
		const livesUntil = Math.max(record.absoluteExpiresAt, expiresAt);
		if (!cluster) {
			return isOne(await evaluate(client, scripts.indexedWrite, [sessionKey(key), indexKey(record.subject)], [now, mode, expiresAt, livesUntil, key, ...fields]));
		}
		await index(client, record.subject, key, livesUntil);
		return isOne(await evaluate(client, scripts.write, sessionKey(key), [now, mode, expiresAt, ...fields]));
	}

	return {
		name: "redis",

		get(key) {
			return run("get", (client) =>
				evaluateReadOnly(client, scripts.load, sessionKey(key)).then((loaded) => (loaded === null ? null : fromLoaded(loaded as string, Date.now()))),
			);
		},

		set(key, record, expiresAt) {
			return run("set", async (client) => {
				if (expiresAt <= Date.now()) await client.del(sessionKey(key));
				else await write(client, "set", key, record, expiresAt);
			});
		},

		replace(key, record, expiresAt) {
			return run("replace", (client) => write(client, "replace", key, record, expiresAt));
		},

		merge(key, changes, expiresAt) {
			const subject = changes.subject;
			// The common merge (no new subject) without an async function of its own around the script.
			if (typeof subject !== "string") return run("merge", (client) => evaluate(client, scripts.merge, sessionKey(key), mergeArgs(Date.now(), changes, expiresAt)).then(isOne));
			return run("merge", async (client) => {
				if (!cluster) {
					const args = mergeArgs(Date.now(), changes, expiresAt);
					args.push(key);
					return isOne(await evaluate(client, scripts.indexedMerge, [sessionKey(key), indexKey(subject)], args));
				}
				// On a Cluster the index goes first (see the layout note), and needs the absolute deadline.
				const absolute = await client.hget(sessionKey(key), "a");
				if (absolute === null) return false;
				await index(client, subject, key, Math.max(Number(absolute), expiresAt));
				return isOne(await evaluate(client, scripts.merge, sessionKey(key), mergeArgs(Date.now(), changes, expiresAt)));
			});
		},

		delete(key) {
			return run("delete", async (client) => {
				await client.del(sessionKey(key));
			});
		},

		touch(key, idleExpiresAt, expiresAt) {
			return run("touch", async (client) => {
				await evaluate(client, scripts.touch, sessionKey(key), [Date.now(), idleExpiresAt, expiresAt]);
			});
		},

		listBySubject(subject) {
			return run("listBySubject", async (client) => {
				const keys = await members(client, subject);
				const rows = await Promise.all(keys.map((key) => client.hmget(sessionKey(key), "s", "c", "i", "a", "e")));
				const now = Date.now();
				const live: SubjectSession[] = [];
				const stale: string[] = [];
				rows.forEach(([s, c, i, a, e], n) => {
					if (s !== subject || !(Number(e) > now)) stale.push(keys[n]!);
					else live.push({ key: keys[n]!, createdAt: Number(c), idleExpiresAt: Number(i), absoluteExpiresAt: Number(a) });
				});
				// A member whose session ended or moved to another subject is pruned, by a script that
				// checks again. Not on a Cluster: there the member of a login or a subject change is
				// written before the session, so one that looks stale may be about to become live,
				// and no script can check both. It goes when its score (the absolute deadline) passes.
				if (stale.length > 0 && !cluster) await evaluate(client, scripts.prune, [indexKey(subject), ...stale.map(sessionKey)], [now, subject, ...stale]);
				return live;
			});
		},

		deleteBySubject(subject) {
			return run("deleteBySubject", async (client) => {
				const keys = await members(client, subject);
				const now = Date.now();
				const index = indexKey(subject);
				// One script per session: it deletes only if the session still has this subject, and
				// on a standalone server drops the member in the same script.
				const results = await Promise.all(
					keys.map((key) => evaluate(client, scripts.deleteIfSubject, cluster ? sessionKey(key) : [sessionKey(key), index], [now, subject, key]).then(integerReply)),
				);
				// On a Cluster, only the members of sessions deleted here: any other may be a login
				// or a subject change whose session is not written yet (see listBySubject).
				if (cluster) {
					const deleted = keys.filter((_, n) => results[n] !== 0);
					if (deleted.length > 0) await client.zrem(index, ...deleted);
				}
				return results.filter((result) => result === 1).length;
			});
		},

		count() {
			return run("count", async (client) => {
				// Each master holds its own slots, so a cluster is counted node by node.
				const nodes = cluster ? await masters(cluster) : [client];
				// ioredis puts its keyPrefix option before every key it sends, but not into SCAN's MATCH.
				const keyPrefix = (client as { options?: { keyPrefix?: string } }).options?.keyPrefix ?? "";
				const pattern = `${escapeGlob(keyPrefix + prefix)}{*`;
				const counts = await Promise.all(
					nodes.map(async (node) => {
						let total = 0;
						let cursor = "0";
						do {
							const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
							cursor = next;
							total += keys.length;
						} while (cursor !== "0");
						return total;
					}),
				);
				return counts.reduce((sum, n) => sum + n, 0);
			});
		},

		async close() {
			if (!owned) return;
			let client: Client;
			try {
				client = await ready;
			} catch {
				return; // ioredis never loaded: nothing was opened
			}
			// QUIT waits for the server's answer, which a frozen server never gives: shutdown would hang.
			let timer: ReturnType<typeof setTimeout> | undefined;
			const quit = client.quit().then(
				() => true,
				() => true,
			);
			const quitted = await Promise.race([quit, new Promise<boolean>((resolve) => (timer = setTimeout(resolve, timeoutMs, false)))]);
			clearTimeout(timer);
			if (!quitted) client.disconnect();
		},
	};
}
