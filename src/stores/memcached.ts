import type { Client, Response } from "memjs";
import { SessionConfigError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, StoredRecord } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { describe } from "./internal/describe.js";
import { checkTimeout } from "./internal/timeout.js";
import { checkStoreArguments } from "./internal/option-keys.js";

/** Where {@link memcachedStore} gets its connection: your own memjs client, or servers it connects to. */
export type MemcachedConnection =
	/** A memjs `Client` with the default (pass-through) serializer; the store never closes it. */
	| { client: Client }
	/** `"host:port,host:port"` or a list of `host:port`; the store loads memjs, and `close()` closes it. */
	| { servers: string | string[] };

/** Options of {@link memcachedStore}. */
export interface MemcachedStoreOptions {
	/**
	 * Put before every key. Printable ASCII without spaces, at most 186 characters (memcached keys
	 * are at most 250 bytes and a session key takes 64).
	 * @default "sess:"
	 */
	prefix?: string;
	/**
	 * Seconds an operation may take before it rejects with `SessionStoreError`; above 0, at most
	 * 2147483 (about 24.8 days, the longest timer Node keeps).
	 * @default 5
	 */
	timeout?: number;
}

/** What run() tells work that loops (compare-and-swap): whether to go on, and why it ran long. */
interface Attempt {
	/** run() has rejected (timed out): the caller has its answer. */
	over: boolean;
	/** A parallel write came first at least once: a timeout then means contention, not an unreachable memcached. */
	retried: boolean;
}

/** The value stored under each key: the record plus the deadline the core asked for. */
interface Stored extends StoredRecord {
	expiresAt: number;
}

const MAX_KEY_BYTES = 250;
const SESSION_KEY_LENGTH = 64;
// memcached reads an expiry time above 30 days as an absolute unix time, not a duration.
const MAX_RELATIVE_SECONDS = 30 * 24 * 60 * 60;
// memjs numbers requests with `seq &= 0xffffffff`, a signed 32-bit result: after 2^31 requests
// on one client it turns negative, and every request then throws a RangeError (writeUInt32BE)
// for the next 2^31. The store starts it again from 0 before that; a request numbered that low
// was answered or timed out long ago, so no answer can be matched to the wrong request.
const MAX_SEQ = 0x7fff0000;

// Binary protocol opcodes and statuses used by the compare-and-swap writes (memjs sends the
// others itself, but neither reads nor sends an item's CAS version).
const OPCODE_GET = 0x00;
// replace, not set: memcached drops the item already there when a set's value is too large.
const OPCODE_REPLACE = 0x03;
const STATUS_OK = 0x0000;
const STATUS_NOT_FOUND = 0x0001;
const STATUS_EXISTS = 0x0002;
const NOTHING = Buffer.alloc(0);
const STATUS_TEXT: Record<number, string> = { 0x0003: "Value too large", 0x0004: "Invalid arguments", 0x0005: "Item not stored", 0x0082: "Out of memory" };

/**
 * The exptime memcached needs for `expiresAt` (epoch ms), which must be in the future: seconds
 * from now up to 30 days, an absolute unix time beyond. memcached's clock ticks once a second and
 * lags by up to a second, so an item given n seconds can go in n - 1: the deadline rounded up
 * plus one second is the least that never drops a record early. Reads check `expiresAt` exactly.
 */
function memcachedExptime(expiresAt: number, now: number): number {
	const seconds = Math.ceil((expiresAt - now) / 1000) + 1;
	return seconds > MAX_RELATIVE_SECONDS ? Math.ceil(expiresAt / 1000) + 1 : seconds;
}

function validatePrefix(prefix: unknown): string {
	if (typeof prefix !== "string" || !/^[\x21-\x7e]+$/.test(prefix) || prefix.length > MAX_KEY_BYTES - SESSION_KEY_LENGTH) {
		throw new SessionConfigError("prefix", `must be 1 to ${MAX_KEY_BYTES - SESSION_KEY_LENGTH} printable ASCII characters without spaces, got ${describe(prefix)}.`);
	}
	return prefix;
}


// memjs's form of one server: [user:password@]host[:port], port 11211 if absent.
const SERVER = /^(?:[^@\s]*@)?[A-Za-z0-9._-]+(?::(\d{1,5}))?$/;

/**
 * `servers` as the string memjs parses: split on commas, each entry trimmed and checked. memjs
 * splits on the commas alone, so in "a:11211, b:11211" the host " b" fails every key it gets.
 */
function validateServers(servers: string | readonly unknown[]): string {
	const given = Array.isArray(servers) ? servers : [servers];
	if (!given.every((entry): entry is string => typeof entry === "string")) {
		throw new SessionConfigError("servers", "must be a string or a list of strings.");
	}
	const entries = given.flatMap((entry) => entry.split(",")).map((entry) => entry.trim());
	if (entries.every((entry) => entry === "")) throw new SessionConfigError("servers", "must name at least one host:port.");
	for (const entry of entries) {
		if (entry === "") throw new SessionConfigError("servers", "has an empty entry (two commas in a row, or one at an end).");
		const port = SERVER.exec(entry)?.[1];
		if (!SERVER.test(entry) || (port !== undefined && !(Number(port) >= 1 && Number(port) <= 65535))) {
			// Credentials stay out of the message, and so out of logs.
			throw new SessionConfigError("servers", `has an entry that is not host:port (a host name or IPv4 address, a port from 1 to 65535): ${JSON.stringify(entry.replace(/^[^@]*@/, "…@"))}.`);
		}
	}
	return entries.join(",");
}

function decode(value: Buffer | null, now: number): Stored | null {
	if (value === null) return null;
	const stored = JSON.parse(value.toString("utf8")) as Stored;
	return stored.expiresAt > now ? stored : null;
}

function encode(record: StoredRecord, expiresAt: number): string {
	const stored: Stored = {
		data: record.data,
		flash: record.flash,
		createdAt: record.createdAt,
		idleExpiresAt: record.idleExpiresAt,
		absoluteExpiresAt: record.absoluteExpiresAt,
		subject: record.subject,
		expiresAt,
	};
	return JSON.stringify(stored);
}

function recordOf({ expiresAt: _, ...record }: Stored): StoredRecord {
	return record;
}

/** One binary-protocol request: a 24-byte header (the CAS version at bytes 16-23), extras, key, value. */
function request(opcode: number, seq: number, key: string, extras: Buffer, value: Buffer, cas: Buffer | null): Buffer {
	const keyBytes = Buffer.from(key, "latin1");
	const buffer = Buffer.alloc(24 + extras.length + keyBytes.length + value.length);
	buffer.writeUInt8(0x80, 0);
	buffer.writeUInt8(opcode, 1);
	buffer.writeUInt16BE(keyBytes.length, 2);
	buffer.writeUInt8(extras.length, 4);
	buffer.writeUInt32BE(extras.length + keyBytes.length + value.length, 8);
	buffer.writeUInt32BE(seq, 12);
	cas?.copy(buffer, 16);
	extras.copy(buffer, 24);
	keyBytes.copy(buffer, 24 + extras.length);
	value.copy(buffer, 24 + extras.length + keyBytes.length);
	return buffer;
}

/**
 * Sends `buffer` to the key's server and resolves its answer. It is sent once: memjs would send
 * it again after a connection error, and a compare-and-swap write that was applied before the
 * error would then read as lost to a parallel write, and be applied a second time.
 */
function performOnce(client: Client, key: string, build: (seq: number) => Buffer): Promise<Response> {
	client.incrSeq();
	const seq = client.seq;
	return new Promise((resolve, reject) => {
		client.perform(key, build(seq), seq, (error: Error | null, response: Response | null) => (error || !response ? reject(error ?? new Error("no answer")) : resolve(response)), 1);
	});
}

function statusError(command: string, status: number): Error {
	return new Error(`MemJS ${command}: ${STATUS_TEXT[status] ?? `status 0x${status.toString(16).padStart(4, "0")}`}`);
}

async function connect(servers: string, timeout: number): Promise<Client> {
	let memjs;
	try {
		memjs = await import("memjs");
	} catch (error) {
		throw new SessionConfigError("servers", `needs the "memjs" package to connect: npm install memjs (or pass { client }).`, { cause: error });
	}
	// memjs logs every failed request to the console by default; failures reach callers as
	// SessionStoreError instead.
	return memjs.Client.create(servers, { timeout, conntimeout: timeout, logger: { log() {} } });
}

/**
 * Sessions in memcached through memjs; with several servers memjs picks one per key by
 * hashing it. Records expire natively (an absolute unix time past memcached's 30-day limit on
 * relative expiry); `get` also checks the deadline against the app's clock.
 *
 * `merge` and `touch` read the record with its CAS version and write it back only over that
 * version, reading again when a parallel write came first: parallel requests keep each other's
 * changes, and a session destroyed or renewed meanwhile is never brought back.
 *
 * What memcached cannot do, and what happens instead (see docs/stores/memcached.md):
 * - no listing by subject (memcached cannot enumerate keys): `listBySubject`,
 *   `deleteBySubject` and `count` are absent.
 * - a value is at most 1 MB unless memcached runs with a larger `-I`.
 *
 * The store never closes a client you pass in. With `{ servers }` it loads memjs itself, and a
 * missing memjs package makes every operation reject with `SessionConfigError`. After `close()`
 * every operation rejects with `SessionStoreError` (it never reconnects).
 *
 * Throws `SessionConfigError` for a bad `prefix`, `timeout` or entry of `servers`, an option it
 * does not know (in either argument), and for a
 * client with memjs's `failover` on: it sends a key to another server while its own does not
 * answer, so a session deleted meanwhile comes back with the server.
 *
 * @example
 * import memjs from "memjs";
 * const client = memjs.Client.create("10.0.0.1:11211,10.0.0.2:11211", { retries: 1 });
 * const sessions = createSessions({ store: memcachedStore({ client }) });
 */
export function memcachedStore(connection: MemcachedConnection, options: MemcachedStoreOptions = {}): AsyncSessionStore {
	checkStoreArguments("memcachedStore", connection, ["client", "servers"], options, ["prefix", "timeout"]);
	const prefix = validatePrefix(options?.prefix ?? "sess:");
	const timeoutSeconds = checkTimeout(options?.timeout, 5);

	let ready: Promise<Client>;
	let owned = false;
	let closed = false;
	if (typeof connection !== "object" || connection === null) {
		throw new SessionConfigError("connection", "must be { client } (a memjs Client) or { servers }.");
	} else if ("client" in connection && connection.client) {
		const given = connection.client as Partial<Client>;
		// perform: merge and touch send compare-and-swap requests memjs has no method for.
		if (typeof given.replace !== "function" || typeof given.perform !== "function" || typeof given.incrSeq !== "function") {
			throw new SessionConfigError("client", "must be a memjs Client.");
		}
		// With failover, memjs sends a key to the next server while its own does not answer, and
		// back once it does: a session deleted in between is there again, with its old data.
		if ((connection.client as { options?: { failover?: unknown } }).options?.failover) {
			throw new SessionConfigError(
				"client",
				"has memjs's failover on: a session deleted while its server did not answer would come back when it answers again. Create the client without failover.",
			);
		}
		ready = Promise.resolve(connection.client);
	} else if ("servers" in connection && (typeof connection.servers === "string" || Array.isArray(connection.servers))) {
		const servers = validateServers(connection.servers);
		owned = true;
		ready = connect(servers, timeoutSeconds);
		ready.catch(() => {}); // surfaces at the first operation; see the TSDoc
	} else {
		throw new SessionConfigError("connection", "must be { client } (a memjs Client) or { servers }.");
	}

	/** The memcached key, or null for a key memcached cannot hold (too long, spaces, control characters). */
	function keyOf(key: string): string | null {
		const full = prefix + key;
		return key !== "" && /^[\x21-\x7e]+$/.test(key) && full.length <= MAX_KEY_BYTES ? full : null;
	}

	/** `work` on the client, rejected past `timeout`; `attempt` tells work that loops when to stop. */
	async function run<T>(operation: string, work: (client: Client, attempt: Attempt) => Promise<T>): Promise<T> {
		// memjs would open a new connection, which nothing closes (it keeps the process alive).
		if (closed) throw new SessionStoreError("memcached", `${operation} called after close().`);
		const attempt: Attempt = { over: false, retried: false };
		let timer: ReturnType<typeof setTimeout> | undefined;
		const timedOut = new Promise<never>((_, reject) => {
			timer = setTimeout(() => {
				attempt.over = true;
				// A compare-and-swap loop that kept losing to parallel writes ends here too: say so.
				const reason = attempt.retried ? `gave up: the session kept changing under it for ${timeoutSeconds} s.` : `got no answer within ${timeoutSeconds} s. Is memcached reachable?`;
				reject(new SessionStoreError("memcached", `${operation} ${reason}`));
			}, timeoutSeconds * 1000);
		});
		try {
			return await Promise.race([ready.then((client) => work(wrapSeq(client), attempt)), timedOut]);
		} catch (error) {
			if (error instanceof SessionStoreError || error instanceof SessionConfigError) throw error;
			let detail = error instanceof Error ? error.message : String(error);
			// memjs reports memcached's status only as text ("MemJS SET: Value too large").
			if (/too large/i.test(detail)) detail += " (memcached stores at most 1 MB per value unless started with a larger -I)";
			throw new SessionStoreError("memcached", `${operation} failed: ${detail}`, { cause: error });
		} finally {
			clearTimeout(timer);
		}
	}

	/** The client, its request numbering started again before memjs overflows it (see MAX_SEQ). */
	function wrapSeq(client: Client): Client {
		if (!(client.seq >= 0 && client.seq < MAX_SEQ)) (client as { seq: number }).seq = 0;
		return client;
	}

	/** Writes with memcached's `set` or `replace` (only if the key exists); false if nothing was written. */
	async function write(client: Client, command: "set" | "replace", key: string, value: string, expiresAt: number): Promise<boolean> {
		const now = Date.now();
		// The deadline has passed: 0 would mean "never expires".
		if (expiresAt <= now) return client.delete(key);
		const expires = memcachedExptime(expiresAt, now);
		return command === "set" ? client.set(key, value, { expires }) : client.replace(key, value, { expires });
	}

	/** The item's record (null once past its deadline) and CAS version, or null if memcached has no item. */
	async function gets(client: Client, key: string): Promise<{ found: Stored | null; cas: Buffer } | null> {
		const response = await performOnce(client, key, (seq) => request(OPCODE_GET, seq, key, NOTHING, NOTHING, null));
		const { status } = response.header;
		if (status === STATUS_NOT_FOUND) return null;
		if (status !== STATUS_OK) throw statusError("GET", status);
		return { found: decode(response.val, Date.now()), cas: Buffer.from(response.header.cas) };
	}

	/** Writes `value` only over the item's version `cas`: "changed" if another write came first, "gone" if it was removed. */
	async function setIfUnchanged(client: Client, key: string, value: string, expiresAt: number, cas: Buffer): Promise<"stored" | "changed" | "gone"> {
		const extras = Buffer.alloc(8);
		extras.writeUInt32BE(memcachedExptime(expiresAt, Date.now()), 4);
		const response = await performOnce(client, key, (seq) => request(OPCODE_REPLACE, seq, key, extras, Buffer.from(value, "utf8"), cas));
		const { status } = response.header;
		if (status === STATUS_OK) return "stored";
		if (status === STATUS_EXISTS) return "changed";
		if (status === STATUS_NOT_FOUND) return "gone";
		throw statusError("REPLACE", status);
	}

	/**
	 * Replaces the live record with `update(record)` if no other write lands in between (its CAS
	 * version still matches), else reads it again and retries until run() times out. Resolves
	 * false if there is no live record. A deadline already past deletes the item, as `write` does.
	 */
	async function compareAndSwap(operation: string, client: Client, attempt: Attempt, key: string, update: (record: StoredRecord) => StoredRecord, expiresAt: number): Promise<boolean> {
		// Checked before every request, as an answer can come after either: once run() has
		// rejected, a write would apply a change the caller was told failed; after close(), memjs
		// would reopen the connection (the delete's retry does), which nothing closes.
		const stillWanted = () => {
			if (closed) throw new SessionStoreError("memcached", `${operation} stopped: close() was called meanwhile.`);
			if (attempt.over) throw new SessionStoreError("memcached", `${operation} stopped: it timed out.`);
		};
		for (;;) {
			stillWanted();
			const item = await gets(client, key);
			if (item === null || item.found === null) return false;
			stillWanted();
			if (expiresAt <= Date.now()) return client.delete(key);
			const outcome = await setIfUnchanged(client, key, encode(update(recordOf(item.found)), expiresAt), expiresAt, item.cas);
			if (outcome !== "changed") return outcome === "stored";
			attempt.retried = true;
		}
	}

	return {
		name: "memcached",

		get(key) {
			const stored = keyOf(key);
			if (stored === null) return Promise.resolve(null);
			return run("get", async (client) => {
				const found = decode((await client.get(stored)).value, Date.now());
				return found && recordOf(found);
			});
		},

		set(key, record, expiresAt) {
			return run("set", async (client) => {
				const stored = keyOf(key);
				if (stored === null) throw new SessionStoreError("memcached", `set failed: ${JSON.stringify(key.slice(0, 80))} cannot be a memcached key.`);
				await write(client, "set", stored, encode(record, expiresAt), expiresAt);
			});
		},

		// memcached's replace writes only over an existing key, so a session destroyed or renewed
		// by a parallel request stays gone. It can extend a record in the up to two seconds between
		// its deadline and memcached dropping it (see memcachedExptime). The core commits with
		// merge; replace serves custom callers.
		replace(key, record, expiresAt) {
			const stored = keyOf(key);
			if (stored === null) return Promise.resolve(false);
			return run("replace", (client) => write(client, "replace", stored, encode(record, expiresAt), expiresAt));
		},

		delete(key) {
			const stored = keyOf(key);
			if (stored === null) return Promise.resolve();
			return run("delete", async (client) => {
				await client.delete(stored);
			});
		},

		// Both rewrite the record only over the version they read (compare-and-swap), so a parallel
		// commit is never overwritten: they read it again and apply their change to it.
		merge(key, changes, expiresAt) {
			const stored = keyOf(key);
			if (stored === null) return Promise.resolve(false);
			return run("merge", (client, attempt) => compareAndSwap("merge", client, attempt, stored, (record) => applyChanges(record, changes), expiresAt));
		},

		// memcached's own touch moves only the expiry, and idleExpiresAt lives inside the value.
		touch(key, idleExpiresAt, expiresAt) {
			const stored = keyOf(key);
			if (stored === null) return Promise.resolve();
			return run("touch", async (client, attempt) => {
				await compareAndSwap("touch", client, attempt, stored, (record) => ({ ...record, idleExpiresAt }), expiresAt);
			});
		},

		async close() {
			if (closed) return;
			closed = true;
			if (!owned) return;
			try {
				(await ready).close();
			} catch {
				// memjs never loaded: nothing was opened
			}
		},
	};
}
