import { randomBytes } from "node:crypto";
import { readFileSync, readlinkSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, rename, rm, rmdir, unlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { dirname, join, resolve } from "node:path";
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
	 * with `SessionStoreError` (fractions allowed). A lock whose holder crashed is taken at once if
	 * that holder ran on this machine; one of another host counts as left by a crash after 10 s,
	 * shorter than this default, so such a lock delays the next write of its session instead of failing it.
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
// `<key>.json.lock` and `<key>.json.lock.breaking`, directories holding a `<random>.owner` file:
// see `takeLockDir` and `breakStaleLock`.
const LOCK_DIR = /^[0-9a-f]{64}\.json\.lock(\.breaking)?$/;
// A temp file lives for the milliseconds of one write; one this old was left by a crash.
const STALE_TEMP_MS = 10 * 60_000;
// A lock is held for the milliseconds of one read and one write; one this old whose holder
// cannot be checked (see inspect) was left by a crash.
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

/** Milliseconds since `path` was last modified, or `null` if it is gone. */
async function ageOf(path: string): Promise<number | null> {
	try {
		// mtime is wall-clock time (the file server's, on a network file system), whatever the injected clock says.
		// lstat: a symlink put there (a dangling one would read as gone forever) ages as itself.
		return Date.now() - (await lstat(path)).mtimeMs;
	} catch (error) {
		if (isMissing(error)) return null;
		throw error;
	}
}

async function removeDir(path: string): Promise<void> {
	await rm(path, { recursive: true, force: true });
}

/**
 * Who holds a lock, in the owner file its holder writes into it: enough to tell, on the same
 * machine, whether that process still runs.
 */
interface LockOwner {
	pid: number;
	/** `os.hostname()`, for the error message and to tell another host on a shared folder. */
	host: string;
	/** Linux: the boot id and the pid namespace (containers), within which `pid` means one process; "" elsewhere. */
	space: string;
	/** Linux: the process's start time in clock ticks since boot, which tells a reused pid; `null` elsewhere. */
	start: string | null;
}

// Lock timeouts, among the SessionStoreErrors, each with the lock and who holds it: gc passes over
// their sessions, deleteBySubject retries them.
const lockTimeouts = new WeakMap<object, string>();

function isLockTimeout(error: unknown): boolean {
	return typeof error === "object" && error !== null && lockTimeouts.has(error);
}

/** What `read` gives, or `null` if it throws (no /proc: not Linux; or the process is gone). */
function fromProc(read: () => string): string | null {
	try {
		return read();
	} catch {
		return null;
	}
}

function readProc(path: string): string | null {
	return fromProc(() => readFileSync(path, "utf8").trim());
}

/**
 * The fields of a `/proc/<pid>/stat` after the command name (which may hold spaces and
 * parentheses): the state (field 3) first, the start time (field 22) 20th.
 */
function statFields(stat: string | null): { state: string; start: string | null } | null {
	if (stat === null) return null;
	const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
	return { state: fields[0]!, start: fields[19] ?? null };
}

let self: { owner: LockOwner; text: string } | undefined;

/** This process as a lock owner, worked out once. */
function selfOwner(): { owner: LockOwner; text: string } {
	if (!self) {
		const boot = readProc("/proc/sys/kernel/random/boot_id");
		const pidNamespace = fromProc(() => readlinkSync("/proc/self/ns/pid"));
		const owner: LockOwner = {
			pid: process.pid,
			host: hostname(),
			space: boot !== null && pidNamespace !== null ? `${boot} ${pidNamespace}` : "",
			start: statFields(readProc("/proc/self/stat"))?.start ?? null,
		};
		self = { owner, text: JSON.stringify(owner) };
	}
	return self;
}

function parseOwner(text: string): LockOwner | null {
	try {
		const owner = JSON.parse(text) as Partial<LockOwner> | null;
		const wellFormed =
			Number.isSafeInteger(owner?.pid) &&
			owner!.pid! > 0 &&
			typeof owner!.host === "string" &&
			typeof owner!.space === "string" &&
			(owner!.start === null || typeof owner!.start === "string");
		return wellFormed ? (owner as LockOwner) : null;
	} catch {
		// Half-written: read in the instant its holder writes it.
		return null;
	}
}

/**
 * Creates the lock directory `path` (a key's lock or a breaker) and writes an owner file naming
 * this process into it; resolves that file's path (to `release`), or `null` if `path` is held.
 * Rejects with ENOENT if the shard directory is missing.
 *
 * `mkdir` rather than `open(..., "wx")`: it is atomic on every OS and on network file systems (old
 * NFS clients emulate O_EXCL with a racy check). The owner file comes a moment after the
 * directory; until then `inspect` sees a lock being created, and waits for it as for one of
 * another host. Its name is random, so a release removes only its own owner file, and then the
 * directory only if that is empty: a holder whose lock was broken cannot remove the next holder's.
 */
async function takeLockDir(path: string): Promise<string | null> {
	try {
		await mkdir(path, { mode: 0o700 });
	} catch (error) {
		if (isHeld(error)) return null;
		throw error;
	}
	const owner = join(path, `${randomBytes(8).toString("hex")}.owner`);
	try {
		await writeFile(owner, selfOwner().text, { flag: "wx", mode: 0o600 });
		return owner;
	} catch (error) {
		// Gone: broken as ownerless in that instant (we were frozen), so it is someone else's now.
		if (isMissing(error)) return null;
		// Not written (disk full): give the lock back, a partial owner file with it.
		await release(owner);
		throw error;
	}
}

/**
 * Releases a lock taken by takeLockDir, whatever that gives (see exclusive). A directory that
 * cannot be removed (as Windows refuses while something has it open) is left without an owner
 * file, so it is broken as stale after STALE_LOCK_MS.
 */
async function release(owner: string): Promise<void> {
	await unlink(owner).catch(() => undefined);
	await rmdir(dirname(owner)).catch(() => undefined);
}

/** The owner named in lock directory `path`, or `null` if none is (yet), or `path` is gone. */
async function ownerOf(path: string): Promise<LockOwner | null> {
	try {
		const name = (await readdir(path)).find((entry) => entry.endsWith(".owner"));
		return name === undefined ? null : parseOwner(await readFile(join(path, name), "utf8"));
	} catch (error) {
		const code = (error as NodeJS.ErrnoException | null)?.code;
		if (code === "ENOENT" || code === "ENOTDIR") return null;
		throw error;
	}
}

/** Whether `owner` runs in this machine's pid space, so its pid can be checked. */
function isLocal(owner: LockOwner): boolean {
	const { host, space } = selfOwner().owner;
	return owner.host === host && owner.space === space;
}

/**
 * Whether a liveness check can tell if `owner` still holds its lock: a process of this machine
 * (Linux, where its start time tells a reused pid) other than this one. This process's own locks
 * may be another worker thread's, which can end (terminated) without releasing them, and a pid
 * without a start time may have been reused: those keep the age rule.
 */
function canCheck(owner: LockOwner): boolean {
	return isLocal(owner) && owner.pid !== process.pid && owner.start !== null;
}

/** Whether the process `owner` (see canCheck) still runs: its pid exists, started when the owner did, and is no zombie. */
async function isRunning(owner: LockOwner): Promise<boolean> {
	try {
		process.kill(owner.pid, 0);
	} catch (error) {
		// EPERM: it runs, as another user.
		if ((error as NodeJS.ErrnoException).code === "ESRCH") return false;
	}
	const stat = statFields(readProc(`/proc/${owner.pid}/stat`));
	// Z: killed, not yet reaped.
	return stat !== null && stat.state !== "Z" && stat.start === owner.start;
}

/**
 * What lock directory `path` is now: `"gone"`; `"stale"` if its holder on this machine no longer
 * runs (a crash: at once), or, if no holder on this machine is named in it (another host on a
 * shared folder, a lock still being created, one of an older version), if it is older than
 * STALE_LOCK_MS; else held, by `holder` if known. A running holder is never stale, however long
 * it holds the lock (a debugger, a GC pause, a stopped container): taking over its lock would
 * make two writers.
 */
async function inspect(path: string): Promise<"gone" | "stale" | { holder: LockOwner | null }> {
	const owner = await ownerOf(path);
	if (owner && canCheck(owner)) return (await isRunning(owner)) ? { holder: owner } : "stale";
	const age = await ageOf(path);
	if (age === null) return "gone";
	return age > STALE_LOCK_MS ? "stale" : { holder: owner };
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
 * older than ten minutes and stale locks. `close()` stops a gc scan in progress before its next
 * file (that one is finished), so a gc stopped that way resolves with what it deleted so far.
 *
 * `set`, `replace`, `merge`, `touch` and `delete` on one key run one after another, so parallel
 * merges add up and a slow write never brings back a deleted session: within this process
 * through a queue per key shared by every file store on the same `dir` (the path as resolved),
 * and across processes on one `dir` (node cluster, pm2 workers) through a lock per key, the
 * directory `<key>.json.lock` holding an owner file that names its process, created before the
 * write and removed after it: two creates and two removes per write; `get` takes no lock. A
 * write waits up to `lockTimeout` seconds for another process's lock, then rejects with
 * `SessionStoreError` naming the holder's pid and host. A lock whose holder on this machine has
 * exited (a crash) is removed at once; one whose holder still runs is never taken over, however
 * long it is held (a debugger, a stopped container); one whose holder cannot be checked (another
 * host on a shared folder, a lock being created) is removed once older than 10 seconds.
 * gc passes over a session whose lock stays held (the next run collects it); `deleteBySubject`
 * waits for such locks after deleting the other sessions and rejects, saying how many it could
 * not delete, if some stay held past `lockTimeout`.
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

	/**
	 * Takes `key`'s lock against other processes (see takeLockDir); resolves its owner file, to
	 * pass to `release`. A held lock is retried with backoff for up to `waitMs`, breaking it if it
	 * is stale (see breakStaleLock), then rejects with a lock timeout (see isLockTimeout).
	 *
	 * Resolves `null` if `key`'s shard directory does not exist and `makeShard` is false: no file
	 * of `key` exists then either, so there is nothing to lock (and no directory is created).
	 */
	async function acquire(key: string, makeShard: boolean, waitMs: number): Promise<string | null> {
		const lock = lockOf(key);
		const deadline = Date.now() + waitMs;
		let late = 0;
		for (let retry = 0; ; retry++) {
			try {
				const owner = await takeLockDir(lock);
				if (owner !== null) return owner;
			} catch (error) {
				if (!isMissing(error)) throw error;
				if (!makeShard) return null;
				await mkdir(shardOf(key), { recursive: true, mode: 0o700 });
				continue;
			}
			const holder = await breakStaleLock(lock);
			// Released or broken meanwhile: try again at once, a few times even past the deadline (as gc's wait of 0 needs).
			if (holder === "retry" && (Date.now() < deadline || ++late <= 3)) continue;
			const left = deadline - Date.now();
			if (left <= 0) throw lockTimeout(lock, holder === "retry" ? null : holder);
			await sleep(Math.min(backoff(retry), left));
		}
	}

	function lockTimeout(lock: string, holder: LockOwner | null): SessionStoreError {
		const held = `${lock} is held by ${holder ? `process ${holder.pid} on ${holder.host}` : "another writer"}`;
		const error = new SessionStoreError(STORE, `a lock on the session file could not be taken within ${lockWaitMs} ms (lockTimeout): ${held}.`);
		lockTimeouts.set(error, held);
		return error;
	}

	/**
	 * Removes `lock` if it is stale (see inspect); resolves `"retry"` if the caller should try to
	 * take it again at once (broken, or released meanwhile), else who holds it (`null`: unknown).
	 *
	 * Two waiters can see the same stale lock. If each removed it, the second could remove the
	 * fresh lock the first has just taken in its place, and both would write. So only the holder
	 * of a second lock, `<lock>.breaking` (owned the same way), removes `lock`, and only after
	 * inspecting it again while holding that. Two processes can still hold one key at once only if
	 * - a lock's holder is not visible from here (another host on a shared folder, or a holder
	 *   frozen in the instant before it wrote its owner file) and has not released it for
	 *   STALE_LOCK_MS: its lock is broken, though its late release leaves the next holder's alone; or
	 * - a process crashed in the microseconds it held `<lock>.breaking`, and two waiters then
	 *   remove that stale breaker at once (the same race one level down, after a crash there).
	 */
	async function breakStaleLock(lock: string): Promise<"retry" | LockOwner | null> {
		const state = await inspect(lock);
		if (state === "gone") return "retry";
		if (state !== "stale") return state.holder;
		const breaker = await takeBreaker(`${lock}.breaking`);
		if (breaker === null) return null;
		try {
			// Another waiter may have broken the stale lock and taken a fresh one since we looked.
			if ((await inspect(lock)) === "stale") await removeDir(lock);
		} finally {
			await release(breaker);
		}
		return "retry";
	}

	/** Takes `breaker` (see breakStaleLock); resolves its owner file, or `null` if another waiter holds it. One left by a crash is removed and taken. */
	async function takeBreaker(breaker: string): Promise<string | null> {
		for (let tries = 0; tries < 2; tries++) {
			const owner = await takeLockDir(breaker);
			if (owner !== null) return owner;
			const state = await inspect(breaker);
			if (state === "stale") await removeDir(breaker);
			else if (state !== "gone") return null;
		}
		return null;
	}

	/**
	 * Runs `task` after every earlier task on `key` in this process, holding `key`'s lock against
	 * other processes. With `makeShard` false and no shard directory for `key` (so no file of it
	 * either), resolves `false` without running `task`. It up to `waitMs` for another process's lock (see acquire).
	 *
	 * Settles as `task` did, whatever removing the lock gives: gone already (another process broke
	 * it as stale, see breakStaleLock), or refused (as Windows does while something has the
	 * directory open). A write that happened must not be reported as failed (a merge retried on
	 * that would add its increments twice), nor a failed write lose its own error. A lock left
	 * behind is broken as stale, as one left by a crash is.
	 */
	function exclusive<T>(key: string, makeShard: boolean, task: () => Promise<T>, waitMs = lockWaitMs): Promise<T | false> {
		return serialised(key, async () => {
			const owner = await acquire(key, makeShard, waitMs);
			if (owner === null) return false;
			try {
				return await task();
			} finally {
				await release(owner);
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
		if (!lock.endsWith(".breaking")) await breakStaleLock(lock);
		else if ((await inspect(lock)) === "stale") await removeDir(lock);
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
	 * by shard, one at a time; stops before the next entry once `stopped()` is true. A session file it cannot read (see UNREADABLE_ENTRY) is passed over, so that one
	 * such entry cannot stop every gc and "log out everywhere": it is no session `get` could load
	 * either (that fails closed), and removing it could lose a session a fixed permission brings back.
	 */
	async function scan(
		visit: (entry: { key: string; content: FileContent | null } | { temp: string } | { lock: string }) => Promise<void>,
		stopped = () => false,
	): Promise<void> {
		let shards: string[];
		try {
			shards = (await readdir(dir)).filter((name) => SHARD.test(name));
		} catch (error) {
			if (isMissing(error)) return;
			throw error;
		}
		for (const shard of shards) {
			if (stopped()) return;
			let names: string[];
			try {
				names = await readdir(join(dir, shard));
			} catch (error) {
				if (isMissing(error) || (error as NodeJS.ErrnoException).code === "ENOTDIR") continue;
				throw error;
			}
			for (const name of names) {
				if (stopped()) return;
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

	/**
	 * Deletes every session of `subject`. A session whose lock is held is not waited for during the
	 * scan, but at the end, all at once, each for up to `lockTimeout`; if some lock is held still,
	 * rejects saying how many sessions could not be deleted (the others are). Skipping them quietly
	 * would leave a session alive after "log out everywhere".
	 */
	async function deleteAllOf(subject: string): Promise<number> {
		const deleteIfOfSubject = (key: string, waitMs: number) =>
			// Read again under the key's lock: a write since the scan may have changed the subject.
			exclusive(key, false, async () => (await readLive(key))?.record.subject === subject && (await remove(key)), waitMs);
		let deleted = 0;
		const busy: string[] = [];
		await scan(async (entry) => {
			if (!("key" in entry) || entry.content?.record.subject !== subject) return;
			try {
				if (await deleteIfOfSubject(entry.key, 0)) deleted++;
			} catch (error) {
				if (!isLockTimeout(error)) throw error;
				busy.push(entry.key);
			}
		});
		const retried = await Promise.allSettled(busy.map((key) => deleteIfOfSubject(key, lockWaitMs)));
		const errors: unknown[] = [];
		for (const outcome of retried) {
			if (outcome.status === "rejected") errors.push(outcome.reason);
			else if (outcome.value) deleted++;
		}
		const failure = errors.find((error) => !isLockTimeout(error));
		if (failure !== undefined) throw failure;
		if (errors.length > 0) {
			throw new SessionStoreError(
				STORE,
				`deleteBySubject deleted ${deleted} sessions but could not delete ${errors.length}: their locks were held past lockTimeout (${lockWaitMs} ms); ${lockTimeouts.get(errors[0] as object)}. Call it again to delete them.`,
				{ cause: errors[0] },
			);
		}
		return deleted;
	}

	/**
	 * gc's scan, until `run.stopped` (see close). A session whose lock is held is passed over, not
	 * waited for: the next run collects it.
	 */
	async function collect(run: { stopped: boolean }): Promise<number> {
		let deleted = 0;
		await scan(
			async (entry) => {
				if ("temp" in entry) return removeIfStale(entry.temp);
				if ("lock" in entry) return removeIfStaleLock(entry.lock);
				if (entry.content && entry.content.expiresAt > clock()) return;
				try {
					// Read again under the key's lock: a touch since the scan may have extended it.
					const removed = await exclusive(entry.key, false, async () => (await readLive(entry.key)) === null && (await remove(entry.key)), 0);
					if (removed) deleted++;
				} catch (error) {
					if (!isLockTimeout(error)) throw error;
				}
			},
			() => run.stopped,
		);
		return deleted;
	}

	// The gc runs in progress (the timer's and gc() calls), each settling: close() stops them.
	const gcRuns = new Map<{ stopped: boolean }, Promise<void>>();

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
			return attempt("deleteBySubject", () => deleteAllOf(subject));
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
			const run = { stopped: false };
			const result = attempt("gc", () => collect(run));
			const settled = result.then(
				() => undefined,
				() => undefined,
			);
			gcRuns.set(run, settled);
			void settled.then(() => gcRuns.delete(run));
			return result;
		},
		async close() {
			// A gc scan stops before its next entry; what it is doing meanwhile (a delete under a lock) finishes.
			for (const run of gcRuns.keys()) run.stopped = true;
			await Promise.all([stopGC(), ...gcRuns.values()]);
			const pending: Array<Promise<unknown>> = [];
			for (const [id, tail] of queues) if (id.startsWith(queued)) pending.push(tail);
			await Promise.all(pending);
		},
	};
	const stopGC = startGCTimer(gcInterval, () => store.gc());
	return store;
}
