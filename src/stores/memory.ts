import { SessionConfigError } from "../core/errors.js";
import type { RecordChanges, StoredRecord, SubjectSession, SyncSessionStore } from "../core/store.js";
import { applyChanges } from "../core/store.js";
import { validateGCInterval } from "./internal/gc-timer.js";
import { checkClock } from "./internal/clock.js";

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

function copy(record: StoredRecord): StoredRecord {
	return { ...record, data: { ...record.data }, flash: { ...record.flash } };
}

/**
 * Sessions in this process's memory: fast, bounded, and gone on restart. For development,
 * tests and single-process apps; a multi-process deployment needs a shared store.
 *
 * @example
 * const sessions = createSessions({ store: memoryStore({ maxSessions: 50_000 }) });
 */
export function memoryStore(options: MemoryStoreOptions = {}): MemoryStore {
	const maxSessions = options.maxSessions ?? 10_000;
	if (!Number.isInteger(maxSessions) || maxSessions < 1) {
		throw new SessionConfigError("maxSessions", `must be a positive whole number, got ${String(maxSessions)}.`);
	}
	const sweepInterval = validateGCInterval(options.sweepInterval, 60, "sweepInterval");
	const clock = checkClock(options.clock);

	// A Map keeps insertion order: re-inserting on use makes the first entry the least recently used.
	const entries = new Map<string, Entry>();
	const bySubject = new Map<string, Set<string>>();

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
		entries.set(key, { record, expiresAt });
		newest = key;
		inserted();
		while (entries.size > maxSessions) evictOldest();
	}

	/** Replaces the record of a present entry in place. */
	function update(key: string, entry: Entry, record: StoredRecord, expiresAt: number): void {
		if (entry.record.subject !== record.subject) {
			unindex(key, entry.record.subject);
			index(key, record.subject);
		}
		entry.record = record;
		entry.expiresAt = expiresAt;
		markUsed(key, entry);
	}

	function sweep(): number {
		const now = clock();
		let removed = 0;
		for (const [key, entry] of entries) {
			if (entry.expiresAt <= now && remove(key)) removed++;
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
			entry.expiresAt = expiresAt;
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
