import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, unlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SessionConfigError, SessionError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { describe } from "./internal/describe.js";
import { startGCTimer, validateGCInterval } from "./internal/gc-timer.js";

/** Options of {@link fileStore}. */
export interface FileStoreOptions {
	/** The directory that holds the session files; created (mode 0700) on the first write if missing. */
	dir: string;
	/** Seconds between gc scans of the directory; 0 turns the timer off (`gc()` still works). @default 300 (5 minutes) */
	gcInterval?: number;
	/** The time source, epoch ms. Expiry is checked against it on every read. @default Date.now */
	clock?: () => number;
}

type Capabilities = "merge" | "listBySubject" | "deleteBySubject" | "count" | "gc" | "close";

/** The file store: every optional capability of {@link AsyncSessionStore} is present. */
export interface FileStore extends Omit<AsyncSessionStore, Capabilities>, Required<Pick<AsyncSessionStore, Capabilities>> {
	/** The absolute directory the store uses. */
	readonly dir: string;
}

/** What one session file holds. */
interface FileContent {
	expiresAt: number;
	record: StoredRecord;
}

const STORE = "file";
// The same shape as isWellFormedKey in the core: the only keys that ever become a file name.
const KEY = /^[0-9a-f]{64}$/;
const SHARD = /^[0-9a-f]{2}$/;
const RECORD_FILE = /^([0-9a-f]{64})\.json$/;
const TEMP_FILE = /^[0-9a-f]{64}\.json\.[0-9a-f]+\.tmp$/;
// A temp file lives for the milliseconds of one write; one this old was left by a crash.
const STALE_TEMP_MS = 10 * 60_000;

// The write queues of every file store in this process, one per session file (`<dir>\0<key>`,
// `dir` resolved): two stores on one dir (two createSessions, a store made per request, a
// hot-reloaded module) must still take turns on a key, or a merge through one undoes a delete
// through the other.
const queues = new Map<string, Promise<unknown>>();

function isMissing(error: unknown): boolean {
	return (error as NodeJS.ErrnoException | null)?.code === "ENOENT";
}

function isMap(value: unknown): boolean {
	return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The record's shape, checked: well-formed JSON of another shape (edited by hand) would throw a TypeError in the core at every request. */
function isRecord(value: unknown): value is StoredRecord {
	const record = value as Partial<StoredRecord> | null;
	return (
		isMap(record) &&
		isMap(record!.data) &&
		isMap(record!.flash) &&
		typeof record!.createdAt === "number" &&
		typeof record!.idleExpiresAt === "number" &&
		typeof record!.absoluteExpiresAt === "number" &&
		(record!.subject === null || typeof record!.subject === "string")
	);
}

function parse(text: string): FileContent | null {
	try {
		const content = JSON.parse(text) as Partial<FileContent> | null;
		if (typeof content?.expiresAt !== "number" || !isRecord(content.record)) return null;
		return content as FileContent;
	} catch {
		// Unreachable through this store's own writes (they are atomic renames); a file truncated
		// by a power cut or edited by hand holds no session we could trust.
		return null;
	}
}

/**
 * Sessions as JSON files, one per session, under `dir/<first two hex of the key>/<key>.json`:
 * durable across restarts with no database, for a single server.
 *
 * Keys are used in a path only if they are 64 lowercase hex characters (the shape of every key
 * the core makes). Any other key is treated as absent: `get` resolves `null`, `delete` and
 * `touch` do nothing, `replace` and `merge` resolve `false`, and `set` rejects with
 * `SessionStoreError`.
 *
 * Every write goes to a temp file in the same directory and is renamed over the old file, so a
 * crash mid-write leaves the previous record readable; there is no fsync, so a power cut can
 * lose the latest write. A record past its expiry is never returned; gc deletes its file every
 * `gcInterval` seconds (unref'd timer) or when `gc()` is called, along with temp files
 * older than ten minutes.
 *
 * `set`, `replace`, `merge`, `touch` and `delete` on one key run one after another within this
 * process, through every file store on the same `dir` (the path as resolved), so parallel merges
 * add up and a slow write never brings back a deleted session. Across several processes sharing
 * `dir` that does not hold: their read-modify-writes can interleave, lose an update, and bring a
 * deleted session back. Use the SQLite store (or a server store) for more than one process.
 *
 * `listBySubject`, `deleteBySubject`, `count` and `gc` read every session file: O(n) in the
 * number of sessions.
 *
 * File-system failures (permission denied, disk full) reject with `SessionStoreError` carrying
 * the error as `cause`. Throws `SessionConfigError` at construction for a missing `dir` or a bad
 * `gcInterval` or `clock`.
 *
 * @example
 * const sessions = createSessions({ store: fileStore({ dir: "/var/lib/myapp/sessions" }) });
 */
export function fileStore(options: FileStoreOptions): FileStore {
	if (typeof options?.dir !== "string" || options.dir === "") {
		throw new SessionConfigError("dir", `must be a non-empty directory path, got ${describe(options?.dir)}.`);
	}
	const dir = resolve(options.dir);
	const gcInterval = validateGCInterval(options.gcInterval, 300);
	const clock = options.clock ?? Date.now;
	if (typeof clock !== "function") throw new SessionConfigError("clock", "must be a function returning epoch milliseconds.");

	// The prefix of this dir's entries in `queues`.
	const queued = `${dir}\0`;

	/** Runs `task` after every earlier task on `key` in this process, through any store on `dir`, has settled. */
	function serialised<T>(key: string, task: () => Promise<T>): Promise<T> {
		const id = queued + key;
		// Tails never reject (see below), so `task` runs whatever the previous task's outcome.
		const result = (queues.get(id) ?? Promise.resolve()).then(task);
		const tail = result.then(
			() => undefined,
			() => undefined,
		);
		queues.set(id, tail);
		void tail.then(() => {
			if (queues.get(id) === tail) queues.delete(id);
		});
		return result;
	}

	async function attempt<T>(operation: string, body: () => Promise<T>): Promise<T> {
		try {
			return await body();
		} catch (error) {
			if (error instanceof SessionError) throw error;
			const detail = error instanceof Error ? error.message : String(error);
			throw new SessionStoreError(STORE, `${operation} failed: ${detail}`, { cause: error });
		}
	}

	function shardOf(key: string): string {
		return join(dir, key.slice(0, 2));
	}

	function fileOf(key: string): string {
		return join(shardOf(key), `${key}.json`);
	}

	async function read(file: string): Promise<FileContent | null> {
		try {
			return parse(await readFile(file, "utf8"));
		} catch (error) {
			if (isMissing(error)) return null;
			throw error;
		}
	}

	async function readLive(key: string): Promise<FileContent | null> {
		const content = await read(fileOf(key));
		return content && content.expiresAt > clock() ? content : null;
	}

	async function write(key: string, content: FileContent): Promise<void> {
		const file = fileOf(key);
		const temp = `${file}.${randomBytes(8).toString("hex")}.tmp`;
		const text = JSON.stringify(content);
		try {
			// "wx" with a random name: never follow or reuse a file someone else put there.
			await writeFile(temp, text, { flag: "wx", mode: 0o600 });
		} catch (error) {
			if (!isMissing(error)) throw error;
			await mkdir(shardOf(key), { recursive: true, mode: 0o700 });
			await writeFile(temp, text, { flag: "wx", mode: 0o600 });
		}
		try {
			await rename(temp, file);
		} catch (error) {
			await rm(temp, { force: true });
			throw error;
		}
	}

	async function remove(key: string): Promise<boolean> {
		try {
			await unlink(fileOf(key));
			return true;
		} catch (error) {
			if (isMissing(error)) return false;
			throw error;
		}
	}

	async function removeIfStale(temp: string): Promise<void> {
		try {
			// mtime is wall-clock time, whatever the injected clock says.
			if (Date.now() - (await stat(temp)).mtimeMs > STALE_TEMP_MS) await rm(temp, { force: true });
		} catch (error) {
			if (!isMissing(error)) throw error;
		}
	}

	/** Calls `visit` for every session file and every stray temp file, shard by shard. */
	async function scan(visit: (entry: { key: string; content: FileContent | null } | { temp: string }) => Promise<void>): Promise<void> {
		let shards: string[];
		try {
			shards = (await readdir(dir)).filter((name) => SHARD.test(name));
		} catch (error) {
			if (isMissing(error)) return;
			throw error;
		}
		for (const shard of shards) {
			let names: string[];
			try {
				names = await readdir(join(dir, shard));
			} catch (error) {
				if (isMissing(error) || (error as NodeJS.ErrnoException).code === "ENOTDIR") continue;
				throw error;
			}
			for (const name of names) {
				const key = RECORD_FILE.exec(name)?.[1];
				if (key !== undefined && key.startsWith(shard)) await visit({ key, content: await read(join(dir, shard, name)) });
				else if (TEMP_FILE.test(name)) await visit({ temp: join(dir, shard, name) });
			}
		}
	}

	/** Read-modify-write of the live record under `key`; `false` if there is none. */
	function update(operation: string, key: string, change: (content: FileContent) => FileContent): Promise<boolean> {
		if (!KEY.test(key)) return Promise.resolve(false);
		return attempt(operation, () =>
			serialised(key, async () => {
				const content = await readLive(key);
				if (!content) return false;
				await write(key, change(content));
				return true;
			}),
		);
	}

	const store: FileStore = {
		name: STORE,
		dir,
		async get(key) {
			if (!KEY.test(key)) return null;
			return attempt("get", async () => (await readLive(key))?.record ?? null);
		},
		async set(key, record, expiresAt) {
			if (!KEY.test(key)) throw new SessionStoreError(STORE, "set refused a key that is not 64 lowercase hex characters.");
			await attempt("set", () => serialised(key, () => write(key, { expiresAt, record })));
		},
		replace(key, record, expiresAt) {
			return update("replace", key, () => ({ expiresAt, record }));
		},
		merge(key: string, changes: RecordChanges, expiresAt: number) {
			return update("merge", key, (content) => ({ expiresAt, record: applyChanges(content.record, changes) }));
		},
		async touch(key, idleExpiresAt, expiresAt) {
			await update("touch", key, (content) => ({ expiresAt, record: { ...content.record, idleExpiresAt } }));
		},
		async delete(key) {
			if (!KEY.test(key)) return;
			await attempt("delete", () => serialised(key, () => remove(key)));
		},
		listBySubject(subject) {
			return attempt("listBySubject", async () => {
				const now = clock();
				const out: SubjectSession[] = [];
				await scan(async (entry) => {
					if (!("key" in entry) || !entry.content || entry.content.expiresAt <= now) return;
					const { record } = entry.content;
					if (record.subject === subject) {
						out.push({ key: entry.key, createdAt: record.createdAt, idleExpiresAt: record.idleExpiresAt, absoluteExpiresAt: record.absoluteExpiresAt });
					}
				});
				return out;
			});
		},
		deleteBySubject(subject) {
			return attempt("deleteBySubject", async () => {
				let deleted = 0;
				await scan(async (entry) => {
					if (!("key" in entry) || entry.content?.record.subject !== subject) return;
					// Read again in the key's queue: a write since the scan may have changed the subject.
					const removed = await serialised(entry.key, async () => {
						const live = await readLive(entry.key);
						return live?.record.subject === subject && (await remove(entry.key));
					});
					if (removed) deleted++;
				});
				return deleted;
			});
		},
		count() {
			return attempt("count", async () => {
				const now = clock();
				let live = 0;
				await scan(async (entry) => {
					if ("key" in entry && entry.content && entry.content.expiresAt > now) live++;
				});
				return live;
			});
		},
		gc() {
			return attempt("gc", async () => {
				let deleted = 0;
				await scan(async (entry) => {
					if ("temp" in entry) return removeIfStale(entry.temp);
					if (entry.content && entry.content.expiresAt > clock()) return;
					// Read again in the key's queue: a touch since the scan may have extended it.
					const removed = await serialised(entry.key, async () => (await readLive(entry.key)) === null && (await remove(entry.key)));
					if (removed) deleted++;
				});
				return deleted;
			});
		},
		async close() {
			stopGC();
			const pending: Array<Promise<unknown>> = [];
			for (const [id, tail] of queues) if (id.startsWith(queued)) pending.push(tail);
			await Promise.all(pending);
		},
	};
	const stopGC = startGCTimer(gcInterval, () => store.gc());
	return store;
}
