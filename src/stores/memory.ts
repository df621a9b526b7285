import { SessionConfigError } from "../core/errors.js";
import type { RecordChanges, StoredRecord, SubjectSession, SyncSessionStore } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { validateGCInterval } from "./internal/gc-timer.js";
import { checkClock } from "./internal/clock.js";
import { checkOptionKeys } from "./internal/option-keys.js";

/** Options of {@link memoryStore}. */
export interface MemoryStoreOptions {
	/** Most sessions kept; past it the least recently used is evicted. @default 10000 */
	maxSessions?: number;
	/** Seconds between sweeps of expired sessions, at most 2147483 (about 24.8 days); 0 turns the timer off (`gc()` still works). @default 60 */
	sweepInterval?: number;
	/** The time source, epoch ms (tests pass a controllable clock). @default Date.now */
	clock?: () => number;
}

interface Entry {
	record: StoredRecord;
	expiresAt: number;
	/** The time of this entry's node in the expiry queue: never later than `expiresAt`. */
	queuedAt: number;
}

/**
 * The memory store, with its extras. Every method answers synchronously (`synchronous: true`),
 * so the manager loads a session only when a handler first uses it.
 */
export interface MemoryStore extends SyncSessionStore {
	readonly synchronous: true;
	/** Live and not-yet-swept sessions held right now. */
	readonly size: number;
}

/**
 * Keys by expiry, soonest first: a binary min-heap with lazy deletion. The store keeps one
 * current node per entry, at the entry's `queuedAt`; other nodes are stale, and are dropped
 * when they reach the top, or when the heap is rebuilt. New expiries are mostly the latest
 * yet, so a push rarely moves up more than a level.
 */
class ExpiryQueue {
	private readonly times: number[] = [];
	private readonly keys: string[] = [];

	get size(): number {
		return this.times.length;
	}

	/** The soonest expiry held (stale nodes included); Infinity when empty. */
	soonest(): number {
		return this.times.length > 0 ? this.times[0]! : Number.POSITIVE_INFINITY;
	}

	push(key: string, time: number): void {
		let at = this.times.length;
		while (at > 0) {
			const parent = (at - 1) >> 1;
			if (this.times[parent]! <= time) break;
			this.times[at] = this.times[parent]!;
			this.keys[at] = this.keys[parent]!;
			at = parent;
		}
		this.times[at] = time;
		this.keys[at] = key;
	}

	/** Removes the soonest node and returns its key (its time is what `soonest()` gave). */
	pop(): string {
		const key = this.keys[0]!;
		const lastTime = this.times.pop()!;
		const lastKey = this.keys.pop()!;
		if (this.times.length > 0) this.siftDown(0, lastKey, lastTime);
		return key;
	}

	/** Replaces every node with one per entry of `entries`, at its expiry, which it queues. */
	rebuild(entries: Map<string, Pick<Entry, "expiresAt" | "queuedAt">>): void {
		this.times.length = 0;
		this.keys.length = 0;
		for (const [key, entry] of entries) {
			entry.queuedAt = entry.expiresAt;
			this.times.push(entry.expiresAt);
			this.keys.push(key);
		}
		for (let at = (this.times.length >> 1) - 1; at >= 0; at--) this.siftDown(at, this.keys[at]!, this.times[at]!);
	}

	private siftDown(start: number, key: string, time: number): void {
		const length = this.times.length;
		let at = start;
		for (;;) {
			let child = 2 * at + 1;
			if (child >= length) break;
			if (child + 1 < length && this.times[child + 1]! < this.times[child]!) child++;
			if (this.times[child]! >= time) break;
			this.times[at] = this.times[child]!;
			this.keys[at] = this.keys[child]!;
			at = child;
		}
		this.times[at] = time;
		this.keys[at] = key;
	}
}

function copy(record: StoredRecord): StoredRecord {
	return { ...record, data: { ...record.data }, flash: { ...record.flash } };
}

/**
 * Sessions in this process's memory: fast, bounded, and gone on restart. For development,
 * tests and single-process apps; a multi-process deployment needs a shared store.
 *
 * Past `maxSessions`, sessions that have expired (but were not swept yet) go first, then the
 * least recently used. Throws `SessionConfigError` for a bad option, or one it does not know.
 *
 * @example
 * const sessions = createSessions({ store: memoryStore({ maxSessions: 50_000 }) });
 */
export function memoryStore(options: MemoryStoreOptions = {}): MemoryStore {
	checkOptionKeys(options, ["maxSessions", "sweepInterval", "clock"], "memoryStore");
	const maxSessions = options.maxSessions ?? 10_000;
	if (!Number.isInteger(maxSessions) || maxSessions < 1) {
		throw new SessionConfigError("maxSessions", `must be a positive whole number, got ${String(maxSessions)}.`);
	}
	const sweepInterval = validateGCInterval(options.sweepInterval, 60, "sweepInterval");
	const clock = checkClock(options.clock);

	// A Map keeps insertion order: re-inserting on use makes the first entry the least recently used.
	const entries = new Map<string, Entry>();
	const bySubject = new Map<string, Set<string>>();
	// Past maxSessions an expired session goes before any live one, wherever it is in LRU order.
	const expiries = new ExpiryQueue();

	/** Gives `entry` its current node in `expiries`: an older one, if any, turns stale. */
	function queue(key: string, entry: Entry): void {
		entry.queuedAt = entry.expiresAt;
		expiries.push(key, entry.expiresAt);
		// Only a deletion or an earlier expiry leaves a stale node; a rebuild (O(n + stale)) waits
		// until they outnumber the entries: O(1) each, and never for expiries that only move later.
		if (expiries.size > 2 * entries.size + 64) expiries.rebuild(entries);
	}

	function setExpiry(key: string, entry: Entry, expiresAt: number): void {
		entry.expiresAt = expiresAt;
		// A later expiry (the usual case) keeps the node: `sweep` queues it again when it comes up.
		if (expiresAt < entry.queuedAt) queue(key, entry);
	}

	function unindex(key: string, subject: string | null): void {
		if (subject === null) return;
		const keys = bySubject.get(subject);
		if (!keys) return;
		keys.delete(key);
		if (keys.size === 0) bySubject.delete(subject);
	}

	function index(key: string, subject: string | null): void {
		if (subject === null) return;
		let keys = bySubject.get(subject);
		if (!keys) bySubject.set(subject, (keys = new Set()));
		keys.add(key);
	}

	function remove(key: string): boolean {
		const entry = entries.get(key);
		if (!entry) return false;
		entries.delete(key);
		if (key === newest) newest = undefined;
		unindex(key, entry.record.subject);
		return true;
	}

	function live(key: string): Entry | undefined {
		const entry = entries.get(key);
		if (!entry) return undefined;
		if (entry.expiresAt <= clock()) {
			remove(key);
			return undefined;
		}
		return entry;
	}

	// The key at the end of `entries` (the most recently used): moving it there again is a no-op.
	let newest: string | undefined;

	function markUsed(key: string, entry: Entry): void {
		if (key === newest) return;
		entries.delete(key);
		entries.set(key, entry);
		newest = key;
		inserted();
	}

	// The least recently used key comes from one long-lived iterator. A fresh `entries.keys()`
	// would first step over every hole that deletions left at the front of the Map's table:
	// thousands once the store is full, which made each new session cost ~10 µs more.
	let oldest = entries.keys();

	// Insertions into `entries` since `oldest` last moved. V8 rebuilds a Map's table once its free
	// slots are used up, and keeps each old table (deleted keys and records included) alive for
	// an iterator that has not moved since: one that only evictions move kept every table of a
	// store that never filled up, or was only read (~55 MB per million reads of 1000 sessions).
	// V8 rebuilds at most a few times per `entries.size` insertions: past that many, a fresh
	// iterator, which costs one skip over the holes at the front at the next eviction.
	let insertions = 0;

	function inserted(): void {
		if (++insertions > entries.size) {
			insertions = 0;
			oldest = entries.keys();
		}
	}

	function evictOldest(): void {
		// Moving the iterator takes it to the current table.
		insertions = 0;
		let next = oldest.next();
		// Keys are only ever appended and each key it yields is evicted, so every live key lies
		// ahead of it and it cannot end while the store holds one. A guard all the same: an
		// iterator that ended stays ended, and the caller's loop must not spin.
		if (next.done) {
			oldest = entries.keys();
			next = oldest.next();
		}
		if (!next.done) remove(next.value);
	}

	function put(key: string, record: StoredRecord, expiresAt: number): void {
		const previous = entries.get(key);
		if (previous) {
			update(key, previous, record, expiresAt);
			return;
		}
		index(key, record.subject);
		const entry: Entry = { record, expiresAt, queuedAt: expiresAt };
		entries.set(key, entry);
		queue(key, entry);
		newest = key;
		inserted();
		if (entries.size > maxSessions) sweep();
		while (entries.size > maxSessions) evictOldest();
	}

	/** Replaces the record of a present entry in place. */
	function update(key: string, entry: Entry, record: StoredRecord, expiresAt: number): void {
		if (entry.record.subject !== record.subject) {
			unindex(key, entry.record.subject);
			index(key, record.subject);
		}
		entry.record = record;
		setExpiry(key, entry, expiresAt);
		markUsed(key, entry);
	}

	/**
	 * Removes every expired session: O(1) when none has expired, else O(log n) per node that came
	 * due (a session removed, or one whose expiry moved later and is queued again).
	 */
	function sweep(): number {
		const now = clock();
		let removed = 0;
		for (let time = expiries.soonest(); time <= now; time = expiries.soonest()) {
			const key = expiries.pop();
			const entry = entries.get(key);
			// Otherwise the node is stale: its key is gone, or has another node now.
			if (entry?.queuedAt !== time) continue;
			if (entry.expiresAt > now) queue(key, entry);
			else if (remove(key)) removed++;
		}
		return removed;
	}

	let timer: ReturnType<typeof setInterval> | undefined;
	if (sweepInterval > 0) {
		timer = setInterval(sweep, sweepInterval * 1000);
		timer.unref?.();
	}

	return {
		name: "memory",
		synchronous: true,
		get size() {
			return entries.size;
		},
		get(key) {
			const entry = live(key);
			if (!entry) return null;
			markUsed(key, entry);
			// Stored records are never changed in place (touch and merge replace them), so the
			// caller may share this one; it must not change it either.
			return entry.record;
		},
		set(key, record, expiresAt) {
			put(key, copy(record), expiresAt);
		},
		replace(key, record, expiresAt) {
			const entry = live(key);
			if (!entry) return false;
			update(key, entry, copy(record), expiresAt);
			return true;
		},
		merge(key: string, changes: RecordChanges, expiresAt: number) {
			const entry = live(key);
			if (!entry) return false;
			update(key, entry, applyChanges(entry.record, changes), expiresAt);
			return true;
		},
		delete(key) {
			remove(key);
		},
		touch(key, idleExpiresAt, expiresAt) {
			const entry = live(key);
			if (!entry) return;
			entry.record = { ...entry.record, idleExpiresAt };
			setExpiry(key, entry, expiresAt);
		},
		listBySubject(subject): SubjectSession[] {
			const out: SubjectSession[] = [];
			for (const key of bySubject.get(subject) ?? []) {
				const entry = live(key);
				if (entry) out.push({ key, createdAt: entry.record.createdAt, idleExpiresAt: entry.record.idleExpiresAt, absoluteExpiresAt: entry.record.absoluteExpiresAt });
			}
			return out;
		},
		deleteBySubject(subject) {
			let deleted = 0;
			for (const key of [...(bySubject.get(subject) ?? [])]) {
				if (live(key) && remove(key)) deleted++;
			}
			return deleted;
		},
		count() {
			sweep();
			return entries.size;
		},
		gc() {
			return sweep();
		},
		close() {
			if (timer) clearInterval(timer);
			timer = undefined;
		},
	};
}
