import type { Awaitable } from "./steps.js";

/**
 * A persisted session as stores see it. The store never sees the token: its key is the
 * SHA-256 hash of the token (64 lowercase hex characters).
 *
 * Values in `data` and `flash` are strings produced by the codec; a store keeps them as
 * opaque strings. The one exception is `increment` in {@link RecordChanges}: a value that
 * is a JSON number (e.g. `"41"`) is read as a number and written back as one.
 */
export interface StoredRecord {
	/** User data, one codec-encoded string per key. */
	data: Record<string, string>;
	/** Flash messages waiting to be read, one codec-encoded string per key. */
	flash: Record<string, string>;
	/** When the session was created (epoch ms). */
	createdAt: number;
	/** When the session expires if it is not used again (epoch ms). Moved forward by `touch`. */
	idleExpiresAt: number;
	/** When the session expires however much it is used (epoch ms). Never moves. */
	absoluteExpiresAt: number;
	/** Who the session belongs to (e.g. a user id), for "log out everywhere"; `null` if unset. */
	subject: string | null;
}

/**
 * The changes one request made to an existing session, as operations rather than a new copy,
 * so that two parallel requests changing different keys both keep their change, and ten
 * parallel increments of one key add up to ten.
 *
 * A store applies them in this order, atomically: `clear`, `delete`, `set`, `increment`,
 * then `flashDelete`, `flashSet`, then `subject` and `idleExpiresAt`. The object and its lists
 * are read-only: empty parts are shared, frozen instances.
 */
export interface RecordChanges {
	/** Remove every data key before applying the rest. */
	clear: boolean;
	/** Data keys to remove. */
	delete: string[];
	/** Data keys to set, with their codec-encoded values. */
	set: Record<string, string>;
	/**
	 * Data keys to add a number to. A missing key counts as 0. A present value that is not a
	 * JSON number is replaced by the increment (the core has already refused increments of
	 * non-numbers it could see).
	 */
	increment: Record<string, number>;
	/** Flash keys that were read and must not be seen again. */
	flashDelete: string[];
	/** Flash messages to keep for a later request. */
	flashSet: Record<string, string>;
	/** The new subject; `undefined` leaves it unchanged, `null` removes it. */
	subject: string | null | undefined;
	/** The new idle deadline (epoch ms). */
	idleExpiresAt: number;
}

/** One live session of a subject, as listed by {@link SessionStore.listBySubject}. */
export interface SubjectSession {
	/** The store key (the public session id), never the token. */
	key: string;
	createdAt: number;
	idleExpiresAt: number;
	absoluteExpiresAt: number;
}

/**
 * Persistence for sessions. Keys are SHA-256 hashes of tokens, never raw tokens; a store must
 * still not trust them (never build a path or query from a key without validating it).
 *
 * Every method rejects only on a system failure (connection lost, timeout, permission denied),
 * ideally with a `SessionStoreError` naming the store; "not found", "expired" and "already
 * deleted" are normal outcomes, not errors.
 *
 * `expiresAt` arguments are absolute epoch milliseconds, always whole: the earlier of the idle
 * and absolute deadlines. The record's instants are whole milliseconds too. After that instant the record must never be returned again, even if the backend
 * reaps it later.
 *
 * Run `storeConformance` from `sessionkit/testing` against a new store: it is the executable
 * form of this contract.
 */
export interface SessionStore {
	/** A short name used in error messages, e.g. `"redis"`. */
	readonly name: string;

	/**
	 * True when every method returns its result directly, never a promise (an in-process store
	 * such as memory). The manager then loads a session only when the handler first uses it, so
	 * a request that never touches its session costs no hashing and no lookup. Methods of other
	 * stores may return promises or values.
	 */
	readonly synchronous?: boolean;

	/**
	 * The record for `key`, or `null` if it is missing or expired at the time of the call. The
	 * core never changes a record it gets, so an in-process store may return the one it keeps; a
	 * later write must not change a record already returned (write a new object instead).
	 */
	get(key: string): Awaitable<StoredRecord | null>;

	/** Inserts or replaces the record (a new session, or the new key of a renewed one). */
	set(key: string, record: StoredRecord, expiresAt: number): Awaitable<void>;

	/**
	 * Replaces the record only if a live record exists under `key`; resolves `false` and writes
	 * nothing otherwise, so a slow request cannot bring back a session that a parallel request
	 * destroyed or renewed. Used when the store has no `merge`.
	 */
	replace(key: string, record: StoredRecord, expiresAt: number): Awaitable<boolean>;

	/**
	 * Optional: applies `changes` atomically to the live record under `key` and moves its expiry
	 * to `expiresAt`. Resolves `false` and writes nothing if there is no live record.
	 */
	merge?(key: string, changes: RecordChanges, expiresAt: number): Awaitable<boolean>;

	/** Removes the record. A no-op if it does not exist. */
	delete(key: string): Awaitable<void>;

	/**
	 * Moves the idle deadline to `idleExpiresAt` and the backend expiry to `expiresAt` without
	 * rewriting data. A no-op if the record does not exist.
	 */
	touch(key: string, idleExpiresAt: number, expiresAt: number): Awaitable<void>;

	/** Optional: the live sessions of `subject` ("where am I logged in"). */
	listBySubject?(subject: string): Awaitable<SubjectSession[]>;

	/** Optional: deletes every session of `subject`; resolves to the number deleted. */
	deleteBySubject?(subject: string): Awaitable<number>;

	/** Optional: the number of live sessions. */
	count?(): Awaitable<number>;

	/** Optional: deletes expired records where the backend does not expire them by itself; resolves to the number deleted. */
	gc?(): Awaitable<number>;

	/** Optional: releases what the store created itself (timers, connections it opened). Never closes a client the user passed in. */
	close?(): Awaitable<void>;
}

type Promised<F> = F extends (...args: infer A) => Awaitable<infer R> ? (...args: A) => Promise<R> : F;
type Settled<F> = F extends (...args: infer A) => Awaitable<infer R> ? (...args: A) => R : F;

/** The contract with every method returning a promise: the type of a store that talks to a server. */
export type AsyncSessionStore = { [K in keyof SessionStore]: Promised<SessionStore[K]> };

/** The contract with every method answering at once: the type of an in-process store (`synchronous: true`). */
export type SyncSessionStore = { [K in keyof SessionStore]: Settled<SessionStore[K]> };

/**
 * A store that keeps the whole record in the cookie itself, sealed with authenticated
 * encryption. The core seals the record after every change and unseals it on load; there is
 * nothing to delete or list on a server.
 */
export interface SealedCookieStore {
	readonly name: string;
	readonly kind: "sealed-cookie";
	/** The largest cookie value it will produce, in bytes; sealing more throws `SessionTooLargeError`. */
	readonly maxCookieBytes: number;
	/** `seal` and `unseal` answer with plain values, never promises: the session then loads only when first used. */
	readonly synchronous?: boolean;
	/** Encrypts and authenticates the record into a cookie-safe string. */
	seal(record: StoredRecord): Awaitable<string>;
	/** The record, or `null` if the value was tampered with, truncated, or sealed with an unknown key. */
	unseal(value: string): Awaitable<StoredRecord | null>;
	close?(): Promise<void>;
}

/** Anything `createSessions({ store })` accepts. */
export type AnyStore = SessionStore | SealedCookieStore;

/** True for a store that keeps the record in the cookie. */
export function isSealedCookieStore(store: AnyStore): store is SealedCookieStore {
	return (store as SealedCookieStore).kind === "sealed-cookie";
}

// For-in loops with this check, not Object.keys: they run on every merge, and an array per
// loop was 5% of a counter request's instructions. V8 answers `hasOwnProperty.call` in a
// for-in from the loop's own cache (`Object.hasOwn` it does not: 6% more).
export const { hasOwnProperty } = Object.prototype;

/**
 * The record `changes` make of `record`, as a new object (`record` is left as it was): the
 * reference semantics of `merge`, for stores that merge in JS. A part that did not change (the
 * flash, most often) is shared with `record`, so treat both as read-only.
 */
export function applyChanges(record: StoredRecord, changes: RecordChanges): StoredRecord {
	const data: Record<string, string> = changes.clear ? {} : { ...record.data };
	for (const key of changes.delete) delete data[key];
	for (const key in changes.set) if (hasOwnProperty.call(changes.set, key)) data[key] = changes.set[key]!;
	for (const key in changes.increment) {
		if (!hasOwnProperty.call(changes.increment, key)) continue;
		const current = data[key] === undefined ? 0 : Number(data[key]);
		const base = Number.isFinite(current) ? current : 0;
		data[key] = String(base + changes.increment[key]!);
	}
	let flash = record.flash;
	if (changes.flashDelete.length > 0 || !isEmpty(changes.flashSet)) {
		flash = { ...record.flash };
		for (const key of changes.flashDelete) delete flash[key];
		for (const key in changes.flashSet) if (hasOwnProperty.call(changes.flashSet, key)) flash[key] = changes.flashSet[key]!;
	}
	return {
		data,
		flash,
		createdAt: record.createdAt,
		idleExpiresAt: changes.idleExpiresAt,
		absoluteExpiresAt: record.absoluteExpiresAt,
		subject: changes.subject === undefined ? record.subject : changes.subject,
	};
}

function isEmpty(object: Record<string, unknown>): boolean {
	for (const _ in object) return false;
	return true;
}
