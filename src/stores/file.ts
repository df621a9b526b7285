import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, rmdir, stat, unlink, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { SessionConfigError, SessionError, SessionStoreError } from "../core/errors.js";
import type { AsyncSessionStore, RecordChanges, StoredRecord, SubjectSession } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { describe } from "./internal/describe.js";
import { startGCTimer, validateGCInterval } from "./internal/gc-timer.js";
import { checkClock } from "./internal/clock.js";
import { checkOptionKeys } from "./internal/option-keys.js";
import { checkTimeout } from "./internal/timeout.js";

/** Options of {@link fileStore}. */
export interface FileStoreOptions {
	/** The directory that holds the session files; created (mode 0700) on the first write if missing. */
	dir: string;
	/** Seconds between gc scans of the directory; 0 turns the timer off (`gc()` still works). @default 300 (5 minutes) */
	gcInterval?: number;
	/** The time source, epoch ms. Expiry is checked against it on every read. @default Date.now */
	clock?: () => number;
	/**
	 * Seconds a write may wait for another process's lock on its session file before it rejects
	 * with `SessionStoreError` (fractions allowed). Longer than the 10 s after which a lock counts as
	 * left by a crash, so such a lock delays the next write of its session instead of failing it.
	 * @default 15
	 */
	lockTimeout?: number;
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
// `<key>.json.lock` and `<key>.json.lock.breaking`: see `acquire` and `breakStaleLock`.
const LOCK_DIR = /^[0-9a-f]{64}\.json\.lock(\.breaking)?$/;
// A temp file lives for the milliseconds of one write; one this old was left by a crash.
const STALE_TEMP_MS = 10 * 60_000;
// A lock is held for the milliseconds of one read and one write; one this old was left by a
// crash (or its holder has been frozen that long: see breakStaleLock).
const STALE_LOCK_MS = 10_000;
// Waiting for a lock: the first retry after about 1 ms, doubling up to about 25 ms.
const FIRST_RETRY_MS = 1;
const LAST_RETRY_MS = 25;

// The write queues of every file store in this process, one per session file (`<dir>\0<key>`,
// `dir` resolved): two stores on one dir (two createSessions, a store made per request, a
// hot-reloaded module) must still take turns on a key, or a merge through one undoes a delete
// through the other.
const queues = new Map<string, Promise<unknown>>();

function isMissing(error: unknown): boolean {
	return (error as NodeJS.ErrnoException | null)?.code === "ENOENT";
}

// Why one entry cannot be read, rather than the directory or the process (EMFILE, EIO): a
// directory, a symlink loop, a file of another owner. A scan passes over such an entry.
const UNREADABLE_ENTRY = new Set(["EISDIR", "ELOOP", "EACCES", "EPERM"]);

function isUnreadableEntry(error: unknown): boolean {
	return UNREADABLE_ENTRY.has((error as NodeJS.ErrnoException | null)?.code ?? "");
}

/** `mkdir` found the directory there already: the lock is held. */
function isHeld(error: unknown): boolean {
	return (error as NodeJS.ErrnoException | null)?.code === "EEXIST";
}

function sleep(ms: number): Promise<void> {
	return new Promise((done) => setTimeout(done, ms));
}

/** The pause before retry number `retry` (0-based) for a held lock: doubling, capped, with jitter so waiting processes do not retry in step. */
function backoff(retry: number): number {
	const ceiling = Math.min(LAST_RETRY_MS, FIRST_RETRY_MS * 2 ** retry);
	return ceiling / 2 + Math.random() * (ceiling / 2);
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
 * durable across restarts with no database, for one machine (one process or several).
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
 * older than ten minutes and locks older than 10 seconds.
 *
 * `set`, `replace`, `merge`, `touch` and `delete` on one key run one after another, so parallel
 * merges add up and a slow write never brings back a deleted session: within this process
 * through a queue per key shared by every file store on the same `dir` (the path as resolved),
 * and across processes on one `dir` (node cluster, pm2 workers) through a lock per key, the
 * directory `<key>.json.lock`, created before the write and removed after it: one create and one
 * remove per write; `get` takes no lock. A write waits up to `lockTimeout` seconds for another
 * process's lock, then rejects with `SessionStoreError`. A lock older than 10 seconds counts as
 * left by a crash and is removed, so a crash delays the next write of its session by at most
 * that; a process frozen longer than that in the middle of a write (a paused VM, an event loop
 * blocked for seconds) can lose its lock and race the next writer.
 *
 * `listBySubject`, `deleteBySubject`, `count` and `gc` read every session file: O(n) in the
 * number of sessions.
 *
 * File-system failures (permission denied, disk full) reject with `SessionStoreError` carrying
 * the error as `cause`. Throws `SessionConfigError` at construction for a missing `dir`, a bad
 * `gcInterval`, `lockTimeout` or `clock`, or an option it does not know.
 *
 * @example
 * const sessions = createSessions({ store: fileStore({ dir: "/var/lib/myapp/sessions" }) });
 */
export function fileStore(options: FileStoreOptions): FileStore {
	checkOptionKeys(options, ["dir", "gcInterval", "lockTimeout", "clock"], "fileStore");
	if (typeof options?.dir !== "string" || options.dir === "") {
		throw new SessionConfigError("dir", `must be a non-empty directory path, got ${describe(options?.dir)}.`);
	}
	const dir = resolve(options.dir);
	const gcInterval = validateGCInterval(options.gcInterval, 300);
	const clock = checkClock(options.clock);
	const lockWaitMs = checkTimeout(options.lockTimeout, 15, "lockTimeout") * 1000;

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

	function lockOf(key: string): string {
		return `${fileOf(key)}.lock`;
	}

	/** Milliseconds since `path` was last modified, or `null` if it is gone. */
	async function ageOf(path: string): Promise<number | null> {
		try {
			// mtime is wall-clock time (the file server's, on a network file system), whatever the injected clock says.
			return Date.now() - (await stat(path)).mtimeMs;
		} catch (error) {
			if (isMissing(error)) return null;
			throw error;
		}
	}

	async function removeDir(path: string): Promise<void> {
		await rm(path, { recursive: true, force: true });
	}

	/**
	 * Takes `key`'s lock against other processes by creating the directory `<key>.json.lock`;
	 * resolves its path. `mkdir` rather than `open(..., "wx")`: it is atomic on every OS and on
	 * network file systems (old NFS clients emulate O_EXCL with a racy check), and it leaves no
	 * descriptor to close, so a write costs one create and one remove. A held lock is retried with
	 * backoff until `lockTimeout`, breaking it if it is stale.
	 *
	 * Resolves `null` if `key`'s shard directory does not exist and `makeShard` is false: no file
	 * of `key` exists then either, so there is nothing to lock (and no directory is created).
	 */
	async function acquire(key: string, makeShard: boolean): Promise<string | null> {
		const lock = lockOf(key);
		const deadline = Date.now() + lockWaitMs;
		for (let retry = 0; ; retry++) {
			try {
				await mkdir(lock, { mode: 0o700 });
				return lock;
			} catch (error) {
				if (isMissing(error)) {
					if (!makeShard) return null;
					await mkdir(shardOf(key), { recursive: true, mode: 0o700 });
					continue;
				}
				if (!isHeld(error)) throw error;
			}
			const retryNow = await breakStaleLock(lock);
			const left = deadline - Date.now();
			if (left <= 0) {
				throw new SessionStoreError(STORE, `a lock on the session file could not be taken within ${lockWaitMs} ms (lockTimeout): ${lock} is held by another writer.`);
			}
			if (!retryNow) await sleep(Math.min(backoff(retry), left));
		}
	}

	/**
	 * Removes `lock` if it is older than STALE_LOCK_MS (its holder crashed); resolves whether the
	 * caller should try to take it again at once (broken, or released meanwhile).
	 *
	 * Two waiters can see the same stale lock. If each removed it, the second could remove the
	 * fresh lock the first has just taken in its place, and both would write. So only the holder
	 * of a second lock, `<lock>.breaking`, removes `lock`, and only after checking its age again
	 * while holding it. Two processes can still hold one key at once only if
	 * - a holder is alive but has not released for STALE_LOCK_MS (a frozen process or VM, an event
	 *   loop blocked that long): its lock is broken, and its late release removes the next
	 *   holder's lock too; or
	 * - a process crashed in the microseconds it held `<lock>.breaking`, and two waiters then
	 *   remove that stale breaker at once (the same race one level down, after a crash there).
	 */
	async function breakStaleLock(lock: string): Promise<boolean> {
		const age = await ageOf(lock);
		if (age === null) return true;
		if (age <= STALE_LOCK_MS) return false;
		const breaker = `${lock}.breaking`;
		if (!(await takeBreaker(breaker))) return false;
		try {
			// Another waiter may have broken the stale lock and taken a fresh one since we looked.
			const again = await ageOf(lock);
			if (again !== null && again > STALE_LOCK_MS) await removeDir(lock);
		} finally {
			await removeDir(breaker);
		}
		return true;
	}

	/** Takes `breaker` (see breakStaleLock); `false` if another waiter holds it. One left by a crash is removed and taken. */
	async function takeBreaker(breaker: string): Promise<boolean> {
		for (let tries = 0; tries < 2; tries++) {
			try {
				await mkdir(breaker, { mode: 0o700 });
				return true;
			} catch (error) {
				if (!isHeld(error)) throw error;
			}
			const age = await ageOf(breaker);
			if (age !== null && age <= STALE_LOCK_MS) return false;
			if (age !== null) await removeDir(breaker);
		}
		return false;
	}

	/**
	 * Runs `task` after every earlier task on `key` in this process, holding `key`'s lock against
	 * other processes. With `makeShard` false and no shard directory for `key` (so no file of it
	 * either), resolves `false` without running `task`.
	 *
	 * Settles as `task` did, whatever removing the lock gives: gone already (another process broke
	 * it as stale, see breakStaleLock), or refused (as Windows does while something has the
	 * directory open). A write that happened must not be reported as failed (a merge retried on
	 * that would add its increments twice), nor a failed write lose its own error. A lock left
	 * behind is broken as stale, as one left by a crash is.
	 */
	function exclusive<T>(key: string, makeShard: boolean, task: () => Promise<T>): Promise<T | false> {
		return serialised(key, async () => {
			const lock = await acquire(key, makeShard);
			if (lock === null) return false;
			try {
				return await task();
			} finally {
				await rmdir(lock).catch(() => undefined);
			}
		});
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

	/** Writes `key`'s file; run only inside `exclusive`, whose lock lies in the shard directory, so that exists. */
	async function write(key: string, content: FileContent): Promise<void> {
		const file = fileOf(key);
		const temp = `${file}.${randomBytes(8).toString("hex")}.tmp`;
		try {
			// "wx" with a random name: never follow or reuse a file someone else put there.
			await writeFile(temp, JSON.stringify(content), { flag: "wx", mode: 0o600 });
			await rename(temp, file);
		} catch (error) {
			// A write cut short (disk full) leaves a partial temp file: left to gc, it would hold the
			// space every other write needs for ten minutes. The write's own error is the one to report.
			await rm(temp, { force: true }).catch(() => undefined);
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
		const age = await ageOf(temp);
		if (age !== null && age > STALE_TEMP_MS) await rm(temp, { force: true });
	}

	/** gc of a lock a crash left: a stale `<key>.json.lock` is broken as a waiting writer would; a stale breaker is removed. */
	async function removeIfStaleLock(lock: string): Promise<void> {
		if (!lock.endsWith(".breaking")) {
			await breakStaleLock(lock);
			return;
		}
		const age = await ageOf(lock);
		if (age !== null && age > STALE_LOCK_MS) await removeDir(lock);
	}

	/**
	 * The session file's content for a scan (`null` if gone, corrupt or of another shape), or
	 * `undefined` if it cannot be read: see UNREADABLE_ENTRY.
	 */
	async function readForScan(file: string): Promise<FileContent | null | undefined> {
		try {
			return await read(file);
		} catch (error) {
			if (isUnreadableEntry(error)) return undefined;
			throw error;
		}
	}

	/**
	 * Calls `visit` for every session file, every stray temp file and every lock directory, shard
	 * by shard. A session file it cannot read (see UNREADABLE_ENTRY) is passed over, so that one
	 * such entry cannot stop every gc and "log out everywhere": it is no session `get` could load
	 * either (that fails closed), and removing it could lose a session a fixed permission brings back.
	 */
	async function scan(
		visit: (entry: { key: string; content: FileContent | null } | { temp: string } | { lock: string }) => Promise<void>,
	): Promise<void> {
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
				if (key !== undefined && key.startsWith(shard)) {
					const content = await readForScan(join(dir, shard, name));
					if (content !== undefined) await visit({ key, content });
				} else if (TEMP_FILE.test(name)) await visit({ temp: join(dir, shard, name) });
				else if (LOCK_DIR.test(name)) await visit({ lock: join(dir, shard, name) });
			}
		}
	}

	/** Read-modify-write of the live record under `key`; `false` if there is none. */
	function update(operation: string, key: string, change: (content: FileContent) => FileContent): Promise<boolean> {
		if (!KEY.test(key)) return Promise.resolve(false);
		return attempt(operation, () =>
			exclusive(key, false, async () => {
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
			await attempt("set", () => exclusive(key, true, () => write(key, { expiresAt, record })));
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
			await attempt("delete", () => exclusive(key, false, () => remove(key)));
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
					// Read again under the key's lock: a write since the scan may have changed the subject.
					const removed = await exclusive(entry.key, false, async () => {
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
					if ("lock" in entry) return removeIfStaleLock(entry.lock);
					if (entry.content && entry.content.expiresAt > clock()) return;
					// Read again under the key's lock: a touch since the scan may have extended it.
					const removed = await exclusive(entry.key, false, async () => (await readLive(entry.key)) === null && (await remove(entry.key)));
					if (removed) deleted++;
				});
				return deleted;
			});
		},
		async close() {
			await stopGC();
			const pending: Array<Promise<unknown>> = [];
			for (const [id, tail] of queues) if (id.startsWith(queued)) pending.push(tail);
			await Promise.all(pending);
		},
	};
	const stopGC = startGCTimer(gcInterval, () => store.gc());
	return store;
}
