import type { Codec } from "./codec.js";
import { isForbiddenKey } from "./codec.js";
import { SessionUsageError } from "./errors.js";
import type { RecordChanges, StoredRecord } from "./store.js";
import { hasOwnProperty } from "./store.js";

/** Keys of `Data` whose values are numbers (any key when `Data` is untyped). */
export type NumericKeys<Data> = {
	[K in keyof Data & string]: unknown extends Data[K] ? K : Exclude<Data[K], undefined> extends number ? K : never;
}[keyof Data & string];

/** Options of `session.flash(key, value, options)`. */
export interface FlashOptions {
	/** Also readable in the current request (then gone once read, here or later). @default false */
	now?: boolean;
}

interface DataEntry {
	encoded: string;
	value: unknown;
	decoded: boolean;
}

interface FlashEntry {
	encoded: string;
	value: unknown;
	decoded: boolean;
	/** `stored`: came with the record; `now`: flashed in this request with `{ now: true }`. */
	source: "stored" | "now";
}

/** A key a request stopped using: the old key of a renewed session, or a destroyed one. */
export interface RetiredKey {
	key: string;
	subject: string | null;
	reason: "renewed" | "destroyed";
	/** When the session expires by its own deadlines (as loaded or last set): see `#endDestroyed`. */
	expiresAt: number;
}

/** Everything the manager reads at commit time. Not part of the public API. */
export interface SessionState {
	token: string | null;
	key: string | null;
	/** A live record exists in the store under `key` (or, for a sealed cookie, in the cookie). */
	stored: boolean;
	/** The record came from the store in this request (`isNew` is its negation). */
	loaded: boolean;
	createdAt: number;
	idleExpiresAt: number;
	absoluteExpiresAt: number;
	subject: string | null;
	modified: boolean;
	destroyed: boolean;
	renewed: boolean;
	retired: RetiredKey[];
	clear: boolean;
	deleted: Set<string>;
	setKeys: Set<string>;
	increments: Map<string, number>;
	flashDeleted: Set<string>;
	flashOut: Map<string, string>;
	subjectChanged: boolean;
	/** The session's own choice of a persistent cookie ("remember me"); `null`: the app's `cookie.persist`. */
	rememberMe: boolean | null;
	/** `rememberMe` was assigned in this request: the cookie goes out again with its new lifetime. */
	rememberMeChanged: boolean;
	/**
	 * The data as stored, shared with the store and never changed: `null` for a new, cleared or
	 * destroyed session. Its keys are read (and decoded) only when the handler asks for them.
	 */
	base: Readonly<Record<string, string>> | null;
	/** Over `base`: the entries this request read, set or incremented. `deleted` hides base keys. */
	data: Map<string, DataEntry>;
	flashes: Map<string, FlashEntry>;
	/** Work the load started that must finish before the commit (see `LazyLoad`). */
	pending: Promise<void> | null;
}

/** Symbol under which a Session keeps its state for the manager. */
export const STATE = Symbol("sessionkit.state");

/** Symbol of the getter that tells whether the handler used the session at all. */
export const USED = Symbol("sessionkit.used");

/** Symbol of the method the manager calls when it starts the commit: later changes would be lost. */
export const CLOSE = Symbol("sessionkit.close");

/** Symbol of the method that drops the request's changes so far (a failed handler's). */
export const DISCARD = Symbol("sessionkit.discard");

/**
 * Symbol of a slot in which an adapter keeps its own state for the request (the Express
 * adapter: its commit hook, see adapters/internal/node-response.ts). The session is the one
 * object of a request that is ours: a property written on a framework's request or response
 * can cost far more.
 */
export const ADAPTER_SLOT = Symbol("sessionkit.adapterSlot");

/** A record that came with the request, and the token and key it came under. */
export interface LoadedRecord {
	token: string | null;
	key: string | null;
	record: StoredRecord;
}

/**
 * What a lazily loaded session finds on first use: the record (or `null`: a new session), and
 * work the load started that `commit` must wait for (e.g. `onDestroy` callbacks of an expired one).
 */
export interface LazyLoad {
	loaded: LoadedRecord | null;
	pending: Promise<void> | null;
}

const MAX_KEY_LENGTH = 256;

/**
 * The data key under which a session's `rememberMe` choice is stored, as "true" or "false": a
 * key like any other to the stores (no schema has a column for it), hidden from the handler.
 */
export const REMEMBER_ME_KEY = "__sessionkit_rememberMe";

/** The stored choice; `null` (the app's `cookie.persist`) without one, or for a value sessionkit never writes. */
function rememberMeOf(data: Readonly<Record<string, string>>): boolean | null {
	if (!Object.hasOwn(data, REMEMBER_ME_KEY)) return null;
	const value = data[REMEMBER_ME_KEY];
	return value === "true" ? true : value === "false" ? false : null;
}

// Most requests record no change and most sessions hold no flash: until the first write, a
// state shares these empty, never-filled instances (six fewer collections per request).
class EmptySet extends Set<string> {
	override add(): never {
		throw new Error("sessionkit internal error: the shared empty set was written to");
	}
}
class EmptyMap<V> extends Map<string, V> {
	override set(): never {
		throw new Error("sessionkit internal error: the shared empty map was written to");
	}
}
const NO_KEYS: Set<string> = new EmptySet();
const NO_NUMBERS: Map<string, number> = new EmptyMap<number>();
const NO_STRINGS: Map<string, string> = new EmptyMap<string>();
const NO_FLASHES: Map<string, FlashEntry> = new EmptyMap<FlashEntry>();

/** The state's own set under `field`, made on first write. */
function keySet(state: SessionState, field: "deleted" | "setKeys" | "flashDeleted"): Set<string> {
	const current = state[field];
	return current === NO_KEYS ? (state[field] = new Set()) : current;
}

function incrementsOf(state: SessionState): Map<string, number> {
	return state.increments === NO_NUMBERS ? (state.increments = new Map()) : state.increments;
}

function flashesOf(state: SessionState): Map<string, FlashEntry> {
	return state.flashes === NO_FLASHES ? (state.flashes = new Map()) : state.flashes;
}

function flashOutOf(state: SessionState): Map<string, string> {
	return state.flashOut === NO_STRINGS ? (state.flashOut = new Map()) : state.flashOut;
}

/** Stored keys the handler never sees: names that could pollute prototypes, and sessionkit's own. */
function isHiddenKey(key: string): boolean {
	return isForbiddenKey(key) || key === REMEMBER_ME_KEY;
}

/** True if the stored data (not this request's changes) holds `key`, and `delete` or `clear` has not hidden it. */
function inBase(state: SessionState, key: string): boolean {
	const base = state.base;
	return base !== null && Object.hasOwn(base, key) && !isHiddenKey(key) && !state.deleted.has(key);
}

/** The entry under `key` as this request sees it; a stored value gets its entry on first read. */
function entryOf(state: SessionState, key: string): DataEntry | undefined {
	const entry = state.data.get(key);
	if (entry !== undefined || !inBase(state, key)) return entry;
	const stored: DataEntry = { encoded: state.base![key]!, value: undefined, decoded: false };
	state.data.set(key, stored);
	return stored;
}

function hasKey(state: SessionState, key: string): boolean {
	return state.data.has(key) || inBase(state, key);
}

/**
 * Folds over every key the session holds and its encoded value, stored keys in their stored
 * order, then new ones. (A fold, so the size check on every commit allocates no closure.)
 */
function foldEntries<A>(state: SessionState, step: (acc: A, key: string, encoded: string) => A, initial: A): A {
	let acc = initial;
	const base = state.base;
	if (base !== null) {
		for (const key of Object.keys(base)) {
			if (isHiddenKey(key)) continue;
			const entry = state.data.get(key);
			if (entry !== undefined) acc = step(acc, key, entry.encoded);
			else if (!state.deleted.has(key)) acc = step(acc, key, base[key]!);
		}
	}
	for (const [key, entry] of state.data) {
		if (base === null || !Object.hasOwn(base, key)) acc = step(acc, key, entry.encoded);
	}
	return acc;
}

function checkKey(key: unknown, what = "key"): asserts key is string {
	if (typeof key !== "string" || key.length === 0 || key.length > MAX_KEY_LENGTH) {
		throw new SessionUsageError(`a session ${what} must be a non-empty string of at most ${MAX_KEY_LENGTH} characters, got ${typeof key === "string" ? JSON.stringify(key.slice(0, 40)) : typeof key}.`);
	}
	if (isForbiddenKey(key)) throw new SessionUsageError(`the session ${what} "${key}" is refused: it could pollute prototypes.`);
	if (key === REMEMBER_ME_KEY) throw new SessionUsageError(`the session ${what} "${key}" is reserved: sessionkit keeps session.rememberMe under it.`);
	if (hasUnstorableChar(key)) throw new SessionUsageError(`the session ${what} ${JSON.stringify(key.slice(0, 40))} is refused: it holds a NUL or an unpaired surrogate, which PostgreSQL and MySQL cannot store.`);
}

/**
 * Throws `SessionUsageError` unless `subject` can be a session's subject. The same rule for
 * `session.subject` and for the lookups by subject: a number or an empty string given to
 * `destroyBySubject` would match no session, and "log out everywhere" would end none.
 */
export function checkSubject(subject: unknown, what: string): asserts subject is string {
	if (typeof subject !== "string" || subject.length === 0 || subject.length > MAX_KEY_LENGTH) {
		throw new SessionUsageError(`${what}: a subject must be a non-empty string of at most ${MAX_KEY_LENGTH} characters, got ${typeof subject === "string" ? JSON.stringify(subject.slice(0, 40)) : subject === null ? "null" : typeof subject}.`);
	}
	if (hasUnstorableChar(subject)) throw new SessionUsageError(`${what}: a subject may not hold a NUL or an unpaired surrogate, which PostgreSQL and MySQL cannot store.`);
}

/**
 * A NUL or a lone UTF-16 surrogate: PostgreSQL refuses both in jsonb names and text, MySQL's
 * JSON a lone surrogate, and Redis would store U+FFFD instead. A name that one store keeps and
 * another refuses would fail only in production: refused everywhere.
 */
function hasUnstorableChar(text: string): boolean {
	for (let i = 0; i < text.length; i++) {
		const code = text.charCodeAt(i);
		if (code === 0) return true;
		if (code < 0xd800 || code > 0xdfff) continue;
		const next = text.charCodeAt(i + 1);
		if (code > 0xdbff || !(next >= 0xdc00 && next <= 0xdfff)) return true;
		i++;
	}
	return false;
}

/**
 * The session of one request. Handlers read and change it; the manager commits what changed
 * after the handler, before the response headers go out. Every change is recorded as an
 * operation, so that parallel requests on one session keep each other's writes.
 *
 * `set` stores a snapshot of the value (it is encoded at once, so a value the codec cannot
 * store fails at the call that set it); changing an object after `set` does not change the
 * session until it is `set` again.
 */
export class Session<Data extends object = Record<string, unknown>> {
	#state: SessionState | undefined;
	#lazy: (() => LazyLoad) | undefined;
	/** Anything read or changed the session: only then is the request activity to commit. */
	#used = false;
	/** The commit has started: a change now could not be saved, so it is refused. */
	#closed = false;
	/** The record the session was built from, to build it again when its changes are discarded. */
	#loaded: LoadedRecord | null = null;
	// Not typed by Data, which would make Session<A> and Session<B> incomparable for adapters.
	#onUse: ((session: Session) => void) | undefined;
	readonly #codec: Codec;
	readonly #now: () => number;
	readonly #idleTimeoutMs: number;
	readonly #absoluteTimeoutMs: number;
	/** The app's `cookie.persist`: what `rememberMe` reads until the session chooses. */
	readonly #persistByDefault: boolean;
	/** @internal Set up front, so that every session keeps one hidden class. */
	[ADAPTER_SLOT]: unknown = undefined;

	/**
	 * @internal Sessions are made by the manager (`sessions.load`), never by user code. `source`
	 * is the loaded record, nothing (a new session), or a function that loads it synchronously
	 * when the session is first used: a request that never touches its session costs nothing.
	 * `onUse` runs once the session is loaded: at once, or on first use for a lazy one.
	 */
	constructor(
		codec: Codec,
		now: () => number,
		idleTimeoutMs: number,
		absoluteTimeoutMs: number,
		persistByDefault: boolean,
		source?: LoadedRecord | (() => LazyLoad),
		onUse?: (session: Session<Data>) => void,
	) {
		this.#codec = codec;
		this.#now = now;
		this.#idleTimeoutMs = idleTimeoutMs;
		this.#absoluteTimeoutMs = absoluteTimeoutMs;
		this.#persistByDefault = persistByDefault;
		if (typeof source === "function") {
			this.#lazy = source;
			this.#onUse = onUse as ((session: Session) => void) | undefined;
			return;
		}
		this.#loaded = source ?? null;
		this.#state = this.#build(this.#loaded, null);
		onUse?.(this);
	}

	/**
	 * @internal The state every method reads; the first access loads a lazy session and marks
	 * the session used. A session loaded up front (from a store that answers asynchronously)
	 * is not used until then either: a request that never touches it is no activity.
	 */
	get [STATE](): SessionState {
		this.#used = true;
		return this.#state ?? this.#load();
	}

	/** @internal True once anything read or changed the session in this request. */
	get [USED](): boolean {
		return this.#used;
	}

	/** @internal Called by the manager as the commit starts; true if it had started already. */
	[CLOSE](): boolean {
		const closed = this.#closed;
		this.#closed = true;
		return closed;
	}

	/** @internal Back to the session as loaded: every change so far is dropped. */
	[DISCARD](): void {
		if (this.#state === undefined || this.#closed) return;
		this.#state = this.#build(this.#loaded, this.#state.pending);
	}

	/** The state, for a method that changes it; refused once the commit has started. */
	#changing(method: string, key?: string): SessionState {
		if (this.#closed) {
			const call = key === undefined ? method : `${method}("${key}")`;
			throw new SessionUsageError(
				`session.${call} came after the session was committed (the response was already on its way), so the change could not be saved. Change the session before sending the response.`,
			);
		}
		return this[STATE];
	}

	#load(): SessionState {
		// A throwing loader (a store failure) leaves the session unloaded: the next access throws too.
		const { loaded, pending } = this.#lazy!();
		this.#lazy = undefined;
		this.#loaded = loaded;
		const state = (this.#state = this.#build(loaded, pending));
		const onUse = this.#onUse;
		this.#onUse = undefined;
		onUse?.(this as Session<object> as Session);
		return state;
	}

	#build(loaded: LoadedRecord | null, pending: Promise<void> | null): SessionState {
		const createdAt = loaded ? loaded.record.createdAt : this.#now();
		let flashes = NO_FLASHES;
		if (loaded) {
			const stored = loaded.record.flash;
			for (const key of Object.keys(stored)) {
				if (isForbiddenKey(key)) continue;
				if (flashes === NO_FLASHES) flashes = new Map();
				flashes.set(key, { encoded: stored[key]!, value: undefined, decoded: false, source: "stored" });
			}
		}
		return {
			token: loaded?.token ?? null,
			key: loaded?.key ?? null,
			stored: loaded !== null,
			loaded: loaded !== null,
			createdAt,
			idleExpiresAt: loaded ? loaded.record.idleExpiresAt : createdAt + this.#idleTimeoutMs,
			absoluteExpiresAt: loaded ? loaded.record.absoluteExpiresAt : createdAt + this.#absoluteTimeoutMs,
			subject: loaded ? loaded.record.subject : null,
			modified: false,
			destroyed: false,
			renewed: false,
			retired: [],
			clear: false,
			deleted: NO_KEYS,
			setKeys: NO_KEYS,
			increments: NO_NUMBERS,
			flashDeleted: NO_KEYS,
			flashOut: NO_STRINGS,
			subjectChanged: false,
			rememberMe: loaded ? rememberMeOf(loaded.record.data) : null,
			rememberMeChanged: false,
			base: loaded ? loaded.record.data : null,
			data: new Map(),
			flashes,
			pending,
		};
	}

	/** The public session id (the store key, a hash of the token); `null` until the session is first saved, and for sealed-cookie sessions. */
	get id(): string | null {
		return this[STATE].key;
	}

	/** True when no stored session came with this request (also after `destroy()`). */
	get isNew(): boolean {
		return !this[STATE].loaded;
	}

	/** When the session was created (epoch ms). */
	get createdAt(): number {
		return this[STATE].createdAt;
	}

	/** When the session will expire if unused: the earlier of the idle and absolute deadlines (epoch ms). */
	get expiresAt(): number {
		const state = this[STATE];
		return Math.min(state.idleExpiresAt, state.absoluteExpiresAt);
	}

	/** Who the session belongs to (e.g. a user id), for `listBySubject`/`destroyBySubject`; `null` if unset. */
	get subject(): string | null {
		return this[STATE].subject;
	}

	set subject(value: string | null) {
		if (value !== null) checkSubject(value, "session.subject (or null)");
		const state = this.#changing("subject");
		if (state.subject === value) return;
		state.subject = value;
		state.subjectChanged = true;
		state.modified = true;
	}

	/**
	 * Whether the session cookie outlives the browser session ("remember me" at login): a
	 * persistent cookie carries `Max-Age` (the time left until the session expires, refreshed as
	 * the session is used), a session cookie ends when the browser closes. The app's
	 * `cookie.persist` until assigned another value; the choice is stored with the session, survives
	 * `renew()` and `clear()`, and `destroy()` forgets it. Assigning a new value sends the cookie
	 * again with the new lifetime; assigning the value it has is no change (as with `subject`).
	 */
	get rememberMe(): boolean {
		return this[STATE].rememberMe ?? this.#persistByDefault;
	}

	set rememberMe(value: boolean) {
		if (typeof value !== "boolean") throw new SessionUsageError(`session.rememberMe must be true or false, got ${typeof value}.`);
		const state = this.#changing("rememberMe");
		if ((state.rememberMe ?? this.#persistByDefault) === value) return;
		state.rememberMe = value;
		state.rememberMeChanged = true;
		state.modified = true;
	}

	/** The value under `key`, or `undefined`. */
	get<K extends keyof Data & string>(key: K): Data[K] | undefined {
		const entry = entryOf(this[STATE], key);
		if (entry === undefined) return undefined;
		if (!entry.decoded) {
			entry.value = this.#codec.decode(entry.encoded);
			entry.decoded = true;
		}
		return entry.value as Data[K];
	}

	/** Stores `value` under `key`, replacing what was there. `undefined` is refused: use `delete`. */
	set<K extends keyof Data & string>(key: K, value: Data[K]): void {
		checkKey(key);
		if (value === undefined) throw new SessionUsageError(`session.set("${key}", undefined) is refused: use session.delete("${key}").`);
		const encoded = this.#codec.encode(value);
		const state = this.#changing("set", key);
		// An object is decoded again on the next read: the caller may change theirs after set().
		const snapshot = typeof value !== "object" || value === null;
		state.data.set(key, { encoded, value: snapshot ? value : undefined, decoded: snapshot });
		keySet(state, "setKeys").add(key);
		state.increments.delete(key);
		state.modified = true;
	}

	/** True if `key` holds a value. */
	has(key: keyof Data & string): boolean {
		return hasKey(this[STATE], key);
	}

	/** Removes `key`; true if it held a value. */
	delete(key: keyof Data & string): boolean {
		const state = this.#changing("delete", key);
		if (!hasKey(state, key)) return false;
		state.data.delete(key);
		state.setKeys.delete(key);
		state.increments.delete(key);
		keySet(state, "deleted").add(key);
		state.modified = true;
		return true;
	}

	/** Removes all data (flash messages and the session itself stay). */
	clear(): void {
		const state = this.#changing("clear()");
		// Nothing to clear in a session that is not stored: a no-op, like delete() of a missing key.
		// A stored one is cleared in the store too, of keys parallel requests may have added.
		if (!state.stored && state.base === null && state.data.size === 0) return;
		state.base = null;
		state.data.clear();
		state.setKeys.clear();
		state.increments.clear();
		state.deleted.clear();
		state.clear = true;
		state.modified = true;
	}

	/** A copy of all data. */
	all(): Partial<Data> {
		const out: Record<string, unknown> = {};
		for (const key of foldEntries(this[STATE], collectKey, [])) out[key] = this.get(key as keyof Data & string);
		return out as Partial<Data>;
	}

	/**
	 * Adds `by` (default 1) to the number under `key` (a missing key counts as 0) and returns
	 * the new value. Stores that merge apply it as an increment, so parallel requests add up.
	 * Throws `SessionUsageError` if the key holds something other than a number.
	 */
	increment<K extends NumericKeys<Data>>(key: K, by = 1): number {
		checkKey(key);
		if (typeof by !== "number" || !Number.isFinite(by)) throw new SessionUsageError(`session.increment("${key}", by): by must be a finite number.`);
		const current = this.get(key as keyof Data & string);
		if (current !== undefined && (typeof current !== "number" || !Number.isFinite(current))) {
			throw new SessionUsageError(`session.increment("${key}"): the value is a ${typeof current}, not a number.`);
		}
		const next = ((current as number | undefined) ?? 0) + by;
		if (!Number.isFinite(next)) throw new SessionUsageError(`session.increment("${key}", ${by}): the result is not a finite number.`);
		const state = this.#changing("increment", key);
		state.data.set(key, { encoded: this.#codec.encode(next), value: next, decoded: true });
		if (!state.setKeys.has(key)) incrementsOf(state).set(key, (state.increments.get(key) ?? 0) + by);
		state.modified = true;
		return next;
	}

	/** Subtracts `by` (default 1); see `increment`. */
	decrement<K extends NumericKeys<Data>>(key: K, by = 1): number {
		// Checked here: -"2" would pass increment's check as -2.
		if (typeof by !== "number") throw new SessionUsageError(`session.decrement("${key}", by): by must be a finite number.`);
		return this.increment(key, -by);
	}

	/**
	 * `flash(key, value)` keeps a message for the next request; with `{ now: true }` it is
	 * readable in this request too. `flash(key)` returns the message once and removes it: once
	 * a request has read it, no later request sees it.
	 */
	flash<T = unknown>(key: string): T | undefined;
	flash(key: string, value: unknown, options?: FlashOptions): void;
	flash(key: string, ...rest: [value?: unknown, options?: FlashOptions]): unknown {
		if (rest.length === 0) return this.#takeFlash(key);
		checkKey(key, "flash key");
		const [value, options] = rest;
		if (value === undefined) throw new SessionUsageError(`session.flash("${key}", undefined) is refused: flash a value.`);
		const encoded = this.#codec.encode(value);
		const state = this.#changing("flash", key);
		flashOutOf(state).set(key, encoded);
		if (options?.now) {
			// The stored message it replaces must not come back once this one has been read.
			if (state.flashes.get(key)?.source === "stored") keySet(state, "flashDeleted").add(key);
			flashesOf(state).set(key, { encoded, value, decoded: true, source: "now" });
		}
		state.modified = true;
		return undefined;
	}

	/** The flash message under `key` without removing it. */
	peekFlash<T = unknown>(key: string): T | undefined {
		const entry = this[STATE].flashes.get(key);
		return entry === undefined ? undefined : (this.#decodeFlash(entry) as T);
	}

	/** Every readable flash message, removed as `flash(key)` would. */
	flashes(): Record<string, unknown> {
		const out: Record<string, unknown> = {};
		for (const key of [...this[STATE].flashes.keys()]) out[key] = this.#takeFlash(key);
		return out;
	}

	/** True if a flash message is readable under `key`, or under any key when none is given. */
	hasFlash(key?: string): boolean {
		const flashes = this[STATE].flashes;
		return key === undefined ? flashes.size > 0 : flashes.has(key);
	}

	/**
	 * Gives the session a new token and id, keeping its data (flash included). Call it on login
	 * and on every privilege change, against session fixation. The old token stops working when
	 * the response is committed.
	 */
	renew(): void {
		const state = this.#changing("renew()");
		if (state.stored && state.key !== null) state.retired.push({ key: state.key, subject: this.#storedSubject(), reason: "renewed", expiresAt: this.expiresAt });
		state.stored = false;
		state.token = null;
		state.key = null;
		state.renewed = true;
		state.modified = true;
	}

	/**
	 * Ends the session: its record is deleted and the cookie expired when the response is
	 * committed. Writes after `destroy()` in the same request start a fresh session.
	 */
	destroy(): void {
		const state = this.#changing("destroy()");
		if (state.stored && state.key !== null) state.retired.push({ key: state.key, subject: this.#storedSubject(), reason: "destroyed", expiresAt: this.expiresAt });
		// renew() earlier in this request retired the key already: it ends now, not renewed.
		for (const retired of state.retired) retired.reason = "destroyed";
		const now = this.#now();
		state.token = null;
		state.key = null;
		state.stored = false;
		state.loaded = false;
		state.createdAt = now;
		state.idleExpiresAt = now + this.#idleTimeoutMs;
		state.absoluteExpiresAt = now + this.#absoluteTimeoutMs;
		state.subject = null;
		state.modified = false;
		state.destroyed = true;
		state.renewed = false;
		state.clear = false;
		state.deleted.clear();
		state.setKeys.clear();
		state.increments.clear();
		state.flashDeleted.clear();
		state.flashOut.clear();
		state.subjectChanged = false;
		state.rememberMe = null;
		state.rememberMeChanged = false;
		state.base = null;
		state.data.clear();
		state.flashes.clear();
	}

	/** The subject of the record as stored (and indexed), whatever this request assigned since. */
	#storedSubject(): string | null {
		return this.#loaded?.record.subject ?? null;
	}

	#takeFlash(key: string): unknown {
		const state = this[STATE];
		const entry = state.flashes.get(key);
		if (entry === undefined) return undefined;
		// Either way the read removes a message that is (or is about to be) stored: a change.
		const outgoing = entry.source === "now" && state.flashOut.get(key) === entry.encoded;
		if (entry.source === "stored" || outgoing) this.#changing("flash", key);
		state.flashes.delete(key);
		if (entry.source === "stored") {
			keySet(state, "flashDeleted").add(key);
			state.modified = true;
		} else if (outgoing) {
			state.flashOut.delete(key);
		}
		return this.#decodeFlash(entry);
	}

	#decodeFlash(entry: FlashEntry): unknown {
		if (!entry.decoded) {
			entry.value = this.#codec.decode(entry.encoded);
			entry.decoded = true;
		}
		return entry.value;
	}
}

// Most merges change one or two keys: the parts they leave empty are these shared, frozen ones.
const NO_LIST: string[] = Object.freeze([]) as unknown as string[];
const NO_STRING_VALUES: Record<string, string> = Object.freeze({}) as Record<string, string>;
const NO_NUMBER_VALUES: Record<string, number> = Object.freeze({}) as Record<string, number>;

/** The operations recorded in `state`, for a store's `merge`. Stores read them, never change them. */
export function changesOf(state: SessionState, idleExpiresAt: number): RecordChanges {
	let set = NO_STRING_VALUES;
	if (state.setKeys.size > 0) {
		set = {};
		for (const key of state.setKeys) set[key] = state.data.get(key)!.encoded;
	}
	// A clear drops every stored key, the choice too: it is written again.
	if (state.rememberMe !== null && (state.rememberMeChanged || state.clear)) {
		if (set === NO_STRING_VALUES) set = {};
		set[REMEMBER_ME_KEY] = String(state.rememberMe);
	}
	let increment = NO_NUMBER_VALUES;
	if (state.increments.size > 0) {
		increment = {};
		for (const [key, by] of state.increments) increment[key] = by;
	}
	let flashSet = NO_STRING_VALUES;
	if (state.flashOut.size > 0) {
		flashSet = {};
		for (const [key, encoded] of state.flashOut) flashSet[key] = encoded;
	}
	return {
		clear: state.clear,
		delete: state.deleted.size > 0 ? [...state.deleted] : NO_LIST,
		set,
		increment,
		flashDelete: state.flashDeleted.size > 0 ? [...state.flashDeleted] : NO_LIST,
		flashSet,
		subject: state.subjectChanged ? state.subject : undefined,
		idleExpiresAt,
	};
}

/** The whole record as this request sees it, for a new key or a store without `merge`. */
export function recordOf(state: SessionState, idleExpiresAt: number): StoredRecord {
	const data = foldEntries<Record<string, string>>(state, collectEntry, {});
	if (state.rememberMe !== null) data[REMEMBER_ME_KEY] = String(state.rememberMe);
	const flash: Record<string, string> = {};
	for (const [key, entry] of state.flashes) if (entry.source === "stored") flash[key] = entry.encoded;
	for (const [key, encoded] of state.flashOut) flash[key] = encoded;
	return {
		data,
		flash,
		createdAt: state.createdAt,
		idleExpiresAt,
		absoluteExpiresAt: state.absoluteExpiresAt,
		subject: state.subject,
	};
}

function collectKey(keys: string[], key: string): string[] {
	keys.push(key);
	return keys;
}

function collectEntry(data: Record<string, string>, key: string, encoded: string): Record<string, string> {
	data[key] = encoded;
	return data;
}

function addUtf8Length(size: number, key: string, encoded: string): number {
	return size + utf8Length(key) + utf8Length(encoded);
}

/** `dataSize` (a fold of the data) plus the flash messages `recordOf` would store, measured by `measure`. */
function measureState(state: SessionState, dataSize: number, measure: (text: string) => number): number {
	let size = dataSize;
	if (state.rememberMe !== null) size += REMEMBER_ME_KEY.length + String(state.rememberMe).length;
	for (const [key, entry] of state.flashes) {
		if (entry.source === "stored" && !state.flashOut.has(key)) size += measure(key) + measure(entry.encoded);
	}
	for (const [key, encoded] of state.flashOut) size += measure(key) + measure(encoded);
	return size;
}

/** UTF-8 bytes the session's data and flash take once encoded, as `recordOf` would store them. */
export function stateSize(state: SessionState): number {
	return measureState(state, foldEntries(state, addUtf8Length, 0), utf8Length);
}

/**
 * An upper bound of `stateSize` that reads no characters: a UTF-16 unit never takes more than
 * 3 UTF-8 bytes. It counts every stored key and every entry of this request, hidden or
 * repeated alike (an overcount is still a bound). When it is under the limit, the exact count
 * is not needed.
 */
export function stateSizeBound(state: SessionState): number {
	let length = 0;
	const base = state.base;
	if (base !== null) for (const key in base) if (hasOwnProperty.call(base, key)) length += key.length + base[key]!.length;
	for (const [key, entry] of state.data) length += key.length + entry.encoded.length;
	return measureState(state, 3 * length, maxUtf8Length);
}

function maxUtf8Length(text: string): number {
	return 3 * text.length;
}

function utf8Length(text: string): number {
	let bytes = text.length;
	for (let i = 0; i < text.length; i++) {
		const code = text.charCodeAt(i);
		if (code < 0x80) continue;
		if (code < 0x800) bytes += 1;
		else if (code >= 0xd800 && code <= 0xdbff) {
			bytes += 2; // a surrogate pair: 2 UTF-16 units, 4 UTF-8 bytes
			i++;
		} else bytes += 2;
	}
	return bytes;
}
