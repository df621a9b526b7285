/**
 * A store for testing the conformance suite itself: a correct in-memory store that answers
 * asynchronously like a remote one, with one deliberate bug switched on by name. The suite must
 * pass it with no bug and fail it with each one.
 */
import type { RecordChanges, SessionStore, StoredRecord, SubjectSession } from "sessionkit";
import { applyChanges } from "sessionkit";

export type Bug =
	| "none"
	/** Ignores expiry altogether: get returns, and gc deletes, nothing by its deadline. */
	| "never-expires"
	/** get returns a record past its deadline until gc reaps it. */
	| "get-returns-expired"
	/** replace writes even when there is no record. */
	| "replace-resurrects"
	/** merge writes even when there is no record. */
	| "merge-resurrects"
	/** replace looks for a record, not a live one: it brings back one past its deadline not yet reaped. */
	| "replace-revives-expired"
	/** merge looks for a record, not a live one. */
	| "merge-revives-expired"
	/** touch looks for a record, not a live one. */
	| "touch-revives-expired"
	/** merge reads, waits, then writes: parallel merges lose each other's changes. */
	| "merge-not-atomic"
	/** merge increments before it sets. */
	| "merge-increment-before-set"
	/** merge reads a data key as a path: "a.b" changes "a" (a JSON path or a MongoDB dotted field built from the key). */
	| "merge-path-keys"
	/** says it is synchronous, but answers with promises. */
	| "claims-synchronous"
	/** merge writes flashSet before flashDelete. */
	| "merge-flash-order"
	/** merge treats subject null as "unchanged". */
	| "merge-ignores-null-subject"
	/** merge treats subject undefined as null. */
	| "merge-clears-subject"
	/** merge keeps the backend expiry it had. */
	| "merge-keeps-expiry"
	/** replace keeps the backend expiry it had. */
	| "replace-keeps-expiry"
	/** set over an existing record keeps the backend expiry it had. */
	| "set-keeps-expiry"
	/** touch reads the record, waits, and writes it back: a parallel merge is lost. */
	| "touch-rewrites-stale"
	/** touch writes back the copy the last get returned. */
	| "touch-writes-cached"
	/** touch rewrites the record without its flash and subject. */
	| "touch-drops-flash-and-subject"
	/** listBySubject lists sessions past their deadline. */
	| "list-includes-expired"
	/** listBySubject matches subjects by prefix (a LIKE 'x%' or a SCAN x*). */
	| "list-matches-prefix"
	/** listBySubject compares subjects without regard to case (a case-insensitive collation). */
	| "list-ignores-case"
	/** listBySubject reports the idle deadline the record had when first stored. */
	| "list-stale-idle"
	/** listBySubject reports the absolute deadline as createdAt. */
	| "list-wrong-created"
	/** deleteBySubject counts expired records it removed too. */
	| "delete-by-subject-counts-expired"
	/** deleteBySubject leaves the last session of the subject. */
	| "delete-by-subject-misses-one"
	/** count includes records past their deadline. */
	| "count-includes-expired"
	/** count never goes down. */
	| "count-never-decreases"
	/** gc deletes records by the expiry they were first stored with, not the one touch or merge moved. */
	| "gc-uses-first-expiry"
	/** gc also deletes records that expire within the next hour and a half. */
	| "gc-deletes-soon"
	/** set keeps the subject index of the record it replaces. */
	| "set-keeps-old-subject-index"
	/** set and replace change the record they are given. */
	| "set-mutates-input"
	/** set keeps the caller's object rather than a copy. */
	| "set-keeps-reference"
	/** merge changes the RecordChanges it is given. */
	| "merge-mutates-changes"
	/** merge empties the `set` of the changes it applied. */
	| "merge-consumes-set"
	/** merge and touch change in place the object an earlier get returned. */
	| "mutates-returned-record"
	/** increments parse with parseFloat and format with toString of a rounded decimal. */
	| "increment-decimal"
	/** an increment whose sum leaves a double's range saturates instead of giving Infinity. */
	| "increment-saturates"
	/** delete of a missing key throws. */
	| "delete-missing-throws"
	/** a second close throws. */
	| "close-not-idempotent";

interface Entry {
	record: StoredRecord;
	expiresAt: number;
	/** The expiry the record was first stored with (what a lazy index would keep). */
	firstExpiresAt: number;
	/** The idle deadline the record was first stored with. */
	firstIdle: number;
}

function copy(record: StoredRecord): StoredRecord {
	return { ...record, data: { ...record.data }, flash: { ...record.flash } };
}

const tick = () => new Promise<void>((resolve) => setTimeout(resolve, 1));

/** A correct asynchronous store with `bug` switched on. */
export function brokenStore(bug: Bug, options: { merge?: boolean } = {}): SessionStore {
	const entries = new Map<string, Entry>();
	const index = new Map<string, Set<string>>();
	const cache = new Map<string, StoredRecord>();
	let closed = false;
	let highest = 0;
	const now = () => Date.now();

	function isLive(entry: Entry | undefined): entry is Entry {
		if (!entry) return false;
		if (bug === "never-expires") return true;
		return entry.expiresAt > now();
	}
	function live(key: string): Entry | undefined {
		const entry = entries.get(key);
		return isLive(entry) ? entry : undefined;
	}
	function unindex(key: string, subject: string | null) {
		if (subject !== null) index.get(subject)?.delete(key);
	}
	function indexKey(key: string, subject: string | null) {
		if (subject === null) return;
		if (!index.has(subject)) index.set(subject, new Set());
		index.get(subject)!.add(key);
	}
	function write(key: string, record: StoredRecord, expiresAt: number, op: "set" | "replace" | "merge" | "touch") {
		const previous = entries.get(key);
		if (previous && !(bug === "set-keeps-old-subject-index" && op === "set")) unindex(key, previous.record.subject);
		indexKey(key, record.subject);
		const keepExpiry = (bug === "set-keeps-expiry" && op === "set") || (bug === "replace-keeps-expiry" && op === "replace") || (bug === "merge-keeps-expiry" && op === "merge");
		entries.set(key, {
			record,
			expiresAt: keepExpiry && previous ? previous.expiresAt : expiresAt,
			firstExpiresAt: previous?.firstExpiresAt ?? expiresAt,
			firstIdle: previous?.firstIdle ?? record.idleExpiresAt,
		});
	}
	function stored(record: StoredRecord): StoredRecord {
		if (bug === "set-mutates-input") {
			record.flash = {};
			return copy(record);
		}
		return bug === "set-keeps-reference" ? record : copy(record);
	}
	function remove(key: string) {
		const entry = entries.get(key);
		if (!entry) return false;
		entries.delete(key);
		unindex(key, entry.record.subject);
		return true;
	}
	function merged(record: StoredRecord, changes: RecordChanges): StoredRecord {
		let effective = changes;
		if (bug === "merge-ignores-null-subject" && changes.subject === null) effective = { ...changes, subject: undefined };
		if (bug === "merge-clears-subject" && changes.subject === undefined) effective = { ...changes, subject: null };
		if (bug === "merge-increment-before-set") {
			const data = changes.clear ? {} : { ...record.data };
			for (const key of changes.delete) delete data[key];
			const afterIncrements = applyChanges({ ...record, data }, { ...changes, clear: false, delete: [], set: {} });
			return { ...afterIncrements, data: { ...afterIncrements.data, ...changes.set } };
		}
		if (bug === "merge-path-keys") {
			const path = (name: string) => name.split(".")[0]!;
			const map = <T>(o: Record<string, T>) => Object.fromEntries(Object.entries(o).map(([k, v]) => [path(k), v]));
			return applyChanges(record, { ...changes, delete: changes.delete.map(path), set: map(changes.set), increment: map(changes.increment) });
		}
		if (bug === "merge-flash-order") {
			const out = applyChanges(record, { ...changes, flashDelete: [], flashSet: {} });
			const flash = { ...record.flash, ...changes.flashSet };
			for (const key of changes.flashDelete) delete flash[key];
			return { ...out, flash };
		}
		if (bug === "increment-decimal" || bug === "increment-saturates") {
			const out = applyChanges(record, { ...changes, increment: {} });
			for (const [key, by] of Object.entries(changes.increment)) {
				const current = Number.parseFloat(out.data[key] ?? "0");
				const base = Number.isFinite(current) ? current : 0;
				out.data[key] = bug === "increment-decimal" ? String(Number((base + by).toFixed(12))) : String(Math.min(Number.MAX_VALUE, Math.max(-Number.MAX_VALUE, base + by)));
			}
			return out;
		}
		if (bug === "merge-mutates-changes") {
			(changes as { delete: string[] }).delete.push(...Object.keys(changes.set));
			return applyChanges(record, { ...changes, delete: changes.delete.filter((key) => !(key in changes.set)) });
		}
		const out = applyChanges(record, effective);
		if (bug === "merge-consumes-set") for (const key of Object.keys(changes.set)) delete changes.set[key];
		return out;
	}

	const store: SessionStore = {
		name: `broken (${bug})`,
		...(bug === "claims-synchronous" ? { synchronous: true } : {}),
		async get(key) {
			await null;
			const entry = bug === "get-returns-expired" ? entries.get(key) : live(key);
			if (!entry) return null;
			if (bug === "mutates-returned-record") return entry.record;
			const out = copy(entry.record);
			cache.set(key, copy(entry.record));
			return out;
		},
		async set(key, record, expiresAt) {
			await null;
			if (expiresAt <= now() && bug !== "never-expires") {
				remove(key);
				return;
			}
			write(key, stored(record), expiresAt, "set");
		},
		async replace(key, record, expiresAt) {
			await null;
			const present = bug === "replace-resurrects" ? true : bug === "replace-revives-expired" ? entries.has(key) : live(key) !== undefined;
			if (!present) return false;
			write(key, stored(record), expiresAt, "replace");
			return true;
		},
		async delete(key) {
			await null;
			if (bug === "delete-missing-throws" && !entries.has(key)) throw new Error("no such key");
			remove(key);
		},
		async touch(key, idleExpiresAt, expiresAt) {
			await null;
			const entry = bug === "touch-revives-expired" ? entries.get(key) : live(key);
			if (!entry) return;
			if (bug === "touch-rewrites-stale") {
				const old = copy(entry.record);
				await tick();
				if (!entries.has(key)) return;
				write(key, { ...old, idleExpiresAt }, expiresAt, "touch");
				return;
			}
			if (bug === "touch-writes-cached" && cache.has(key)) {
				write(key, { ...cache.get(key)!, idleExpiresAt }, expiresAt, "touch");
				return;
			}
			if (bug === "touch-drops-flash-and-subject") {
				write(key, { ...entry.record, flash: {}, subject: null, idleExpiresAt }, expiresAt, "touch");
				return;
			}
			if (bug === "mutates-returned-record") {
				entry.record.idleExpiresAt = idleExpiresAt;
				entry.expiresAt = expiresAt;
				return;
			}
			entry.record = { ...entry.record, idleExpiresAt };
			entry.expiresAt = expiresAt;
		},
		async listBySubject(subject) {
			await null;
			const out: SubjectSession[] = [];
			const keys = bug === "list-matches-prefix"
				? [...index].filter(([s]) => s.startsWith(subject)).flatMap(([, set]) => [...set])
				: bug === "list-ignores-case"
					? [...index].filter(([s]) => s.toLowerCase() === subject.toLowerCase()).flatMap(([, set]) => [...set])
					: [...(index.get(subject) ?? [])];
			for (const key of keys) {
				const entry = bug === "list-includes-expired" ? entries.get(key) : live(key);
				if (!entry) continue;
				const r = entry.record;
				out.push({
					key,
					createdAt: bug === "list-wrong-created" ? r.absoluteExpiresAt : r.createdAt,
					idleExpiresAt: bug === "list-stale-idle" ? entry.firstIdle : r.idleExpiresAt,
					absoluteExpiresAt: r.absoluteExpiresAt,
				});
			}
			return out;
		},
		async deleteBySubject(subject) {
			await null;
			const keys = [...(index.get(subject) ?? [])];
			if (bug === "delete-by-subject-misses-one") keys.pop();
			let deleted = 0;
			for (const key of keys) {
				const wasLive = bug === "delete-by-subject-counts-expired" ? entries.has(key) : live(key) !== undefined;
				if (remove(key) && wasLive) deleted++;
			}
			return deleted;
		},
		async count() {
			await null;
			if (bug === "count-includes-expired") return entries.size;
			let n = 0;
			for (const entry of entries.values()) if (isLive(entry)) n++;
			if (bug === "count-never-decreases") return (highest = Math.max(highest, n));
			return n;
		},
		async gc() {
			await null;
			let removed = 0;
			for (const [key, entry] of entries) {
				const expiry = bug === "gc-uses-first-expiry" ? entry.firstExpiresAt : entry.expiresAt;
				const limit = bug === "gc-deletes-soon" ? now() + 90 * 60_000 : now();
				if (bug === "never-expires") continue;
				if (expiry <= limit && remove(key)) removed++;
			}
			return removed;
		},
		async close() {
			if (closed && bug === "close-not-idempotent") throw new Error("already closed");
			closed = true;
		},
	};
	if (options.merge !== false) {
		store.merge = async (key: string, changes: RecordChanges, expiresAt: number) => {
			await null;
			const present = bug === "merge-resurrects" ? true : bug === "merge-revives-expired" ? entries.has(key) : live(key) !== undefined;
			if (!present) return false;
			const base = entries.get(key)?.record ?? { data: {}, flash: {}, createdAt: now(), idleExpiresAt: changes.idleExpiresAt, absoluteExpiresAt: expiresAt, subject: null };
			if (bug === "merge-not-atomic") {
				const read = copy(base);
				await tick();
				write(key, merged(read, changes), expiresAt, "merge");
				return true;
			}
			if (bug === "mutates-returned-record") {
				const next = merged(base, changes);
				unindex(key, base.subject);
				Object.assign(base, next);
				indexKey(key, base.subject);
				entries.get(key)!.expiresAt = expiresAt;
				return true;
			}
			write(key, merged(base, changes), expiresAt, "merge");
			return true;
		};
	}
	return store;
}
