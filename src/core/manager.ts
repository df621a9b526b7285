import { readSessionCookie, serializeExpiredCookie, serializeSessionCookie } from "./cookie.js";
import { SessionError, SessionStoreError, SessionTooLargeError, SessionUsageError } from "./errors.js";
import type { DestroyedSession, SessionEvent } from "./events.js";
import type { ResolvedOptions, SessionOptions } from "./options.js";
import { resolveOptions } from "./options.js";
import { CLOSE, changesOf, checkSubject, DISCARD, recordOf, Session, STATE, stateSize, stateSizeBound, USED } from "./session.js";
import type { LazyLoad, LoadedRecord, RetiredKey, SessionState } from "./session.js";
import { isPromiseLike, runSteps } from "./steps.js";
import type { Steps } from "./steps.js";
import type { SealedCookieStore, SessionStore, StoredRecord } from "./store.js";
import { isSealedCookieStore } from "./store.js";
import { generateToken, hashToken, isWellFormedKey, isWellFormedToken } from "./token.js";
import { memoryStore } from "../stores/memory.js";

/** What the adapter must add to the response after `commit`. */
export interface CommitResult {
	/** A `Set-Cookie` header value, or `null` when the cookie does not change. */
	setCookie: string | null;
}

/** A live session of a subject, as `listBySubject` shows it. Never carries the token. */
export interface SessionInfo {
	id: string;
	createdAt: number;
	idleExpiresAt: number;
	absoluteExpiresAt: number;
	expiresAt: number;
}

const NO_CHANGE: CommitResult = Object.freeze({ setCookie: null });

const NOTHING_TO_LOAD = (): LazyLoad => ({ loaded: null, pending: null });

/**
 * How many ended sessions' ids a manager remembers, so that `onDestroy` hears of each once:
 * ids are never reused, and a duplicate comes from an operation that raced the first end.
 */
const REMEMBERED_ENDS = 10_000;

// Any well-formed token: tells at start-up whether hashing answers synchronously (node:crypto).
const PROBE_TOKEN = "A".repeat(43);

/** Headers every response that sets the session cookie carries: no cache may keep or share it. */
export const SESSION_RESPONSE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
	"Cache-Control": "no-store",
	Vary: "Cookie",
});

/**
 * True for the record of a session that no request stored (new, or started afresh after
 * `destroy()`), that `renew()` did not ask for, and that holds nothing: no data, no flash
 * message, no subject. Its changes cancelled out (a value set then deleted, a flash shown at
 * once with `now: true`), so it is not stored: "a new session that is never changed writes nothing".
 */
function isEmptyRecord(state: SessionState, record: StoredRecord): boolean {
	if (state.loaded || state.renewed || record.subject !== null) return false;
	for (const _ in record.data) return false;
	for (const _ in record.flash) return false;
	return true;
}

/** Made once per app by `createSessions`; adapters call `load` and `commit` per request. */
export interface SessionManager<Data extends object = Record<string, unknown>> {
	/** The cookie name, as configured. */
	readonly cookieName: string;
	/** The validated options with defaults filled in. */
	readonly options: Readonly<ResolvedOptions>;
	/**
	 * The session for a request, from its `Cookie` header. One store round trip (and a delete when
	 * the record has expired); none without a cookie. With a synchronous store (memory) the
	 * session is returned at once and loaded when the handler first uses it; otherwise a promise
	 * of the loaded session.
	 *
	 * `onUse` (for adapters) runs once the session is loaded: right away for a store that answers
	 * asynchronously, on the handler's first use for a lazy session, never for a request that does
	 * not use its session. Not the moment to hook a commit onto a response's methods: the handler
	 * may have looked one up before that first use (`res.end(String(session.get("n")))`), so the
	 * built-in adapters hook before the handler runs.
	 */
	load(cookieHeader: string | null | undefined, onUse?: (session: Session<Data>) => void): Session<Data> | Promise<Session<Data>>;
	/**
	 * Writes what the request changed (or nothing) and says which `Set-Cookie` to send. Call it
	 * once (a second call throws `SessionUsageError`), after the handler, before headers are sent.
	 * `secure`: the request came over HTTPS; it is read only when a cookie is sent with
	 * `secure: "auto"`, so it may be a getter.
	 * Fails with `SessionStoreError` or `SessionTooLargeError`; the response must then fail.
	 * Like `load`, it completes synchronously when there is nothing to write or the store answers
	 * at once (memory), and returns a promise otherwise: `await` it either way, in a `try`, since
	 * a synchronous commit throws where an asynchronous one rejects.
	 */
	commit(session: Session<Data>, request: { secure: boolean }): CommitResult | Promise<CommitResult>;
	/**
	 * Drops every change the request made to `session` so far, as if the handler had not run:
	 * for a handler that failed. The session stays usable, and changes made after this (an
	 * error handler's, say a `destroy()`) are committed as usual. No effect once the commit
	 * has started. The request still counts as activity if it used the session: when a touch is
	 * due, the idle deadline is extended (and a persistent cookie sent again), as for a request
	 * that only read the session.
	 */
	discard(session: Session<Data>): void;
	/**
	 * For adapters: the session of a request whose `load` failed with `error`. Every use of it
	 * throws `error` again, as a lazily loaded session does whose store fails on first use, so
	 * an error handler that reads the session fails with the store's `SessionStoreError` rather
	 * than a `TypeError` on a missing session. Not to be committed: once used, its commit throws
	 * `error` too.
	 */
	unavailable(error: unknown): Session<Data>;
	/** The live sessions of `subject` (needs a store with `listBySubject`). */
	listBySubject(subject: string): Promise<SessionInfo[]>;
	/**
	 * Ends every session of `subject` ("log out everywhere"); resolves to the number of records
	 * deleted. Two `deleteBySubject` calls: the second ends the new copy of a session that a
	 * parallel request renewed while the first ran (its renewed cookie then leads nowhere; such a
	 * session counts twice, and `onDestroy` hears of both its ids).
	 */
	destroyBySubject(subject: string): Promise<number>;
	/** Ends the session with this public id; a no-op if it does not exist. */
	destroyById(id: string): Promise<void>;
	/** The number of live sessions (needs a store with `count`). */
	count(): Promise<number>;
	/** Deletes expired sessions now, where the store needs it; resolves to the number deleted. */
	gc(): Promise<number>;
	/**
	 * Runs `callback` whenever sessionkit ends a session: `destroy()`, an expired session found by
	 * a request, `destroyById`, `destroyBySubject`. Records that `gc()`, the memory store's sweep
	 * or the backend's own expiry (Redis, memcached, MongoDB TTLs) remove unseen are not reported.
	 * Once per session, however many of these end it (a `destroy()` and a `destroyBySubject` in
	 * one handler, two parallel logouts); across app instances that share a store, only two that
	 * end one session at the same moment can both report it.
	 * Returns a function that unsubscribes.
	 */
	onDestroy(callback: (session: DestroyedSession) => void | Promise<void>): () => void;
	/** Closes the store (what it opened itself). */
	close(): Promise<void>;
}

/**
 * Creates the session manager: validates every option (throwing `SessionConfigError` naming
 * the bad one), then serves `load`/`commit` to an adapter.
 *
 * @example
 * const sessions = createSessions<{ userId: number }>({ store: memoryStore(), idleTimeout: 1800 });
 * app.use(sessionMiddleware(sessions));
 */
export function createSessions<Data extends object = Record<string, unknown>>(options?: SessionOptions): SessionManager<Data> {
	const resolved = resolveOptions(options, (clock) => memoryStore({ clock }));
	return new Manager<Data>(resolved);
}

class Manager<Data extends object> implements SessionManager<Data> {
	readonly options: ResolvedOptions;
	readonly cookieName: string;
	readonly #store: SessionStore | null;
	readonly #sealed: SealedCookieStore | null;
	readonly #destroyListeners = new Set<(session: DestroyedSession) => void | Promise<void>>();
	/** Ids of the sessions `onDestroy` was told of, oldest first (see `REMEMBERED_ENDS`). */
	readonly #ended = new Set<string>();
	readonly #maxCookieBytes: number;
	/** Load on first use: the store answers synchronously and so does hashing. */
	readonly #lazy: boolean;

	constructor(options: ResolvedOptions) {
		this.options = options;
		this.cookieName = options.cookie.name;
		const store = options.store;
		this.#sealed = isSealedCookieStore(store) ? store : null;
		this.#store = isSealedCookieStore(store) ? null : store;
		this.#maxCookieBytes = this.#sealed ? this.#sealed.maxCookieBytes : 64;
		this.#lazy = this.#sealed ? this.#sealed.synchronous === true : this.#store?.synchronous === true && typeof hashToken(PROBE_TOKEN) === "string";
	}

	#emit(event: SessionEvent): void {
		this.options.onEvent?.(event);
	}

	#storeError(operation: string, error: unknown): SessionError {
		const name = this.options.store.name;
		this.#emit({ type: "store-error", store: name, operation, error });
		if (error instanceof SessionError) return error;
		const detail = error instanceof Error ? error.message : String(error);
		return new SessionStoreError(name, `${operation} failed: ${detail}`, { cause: error });
	}

	load(cookieHeader: string | null | undefined, onUse?: (session: Session<Data>) => void): Session<Data> | Promise<Session<Data>> {
		if (cookieHeader === undefined || cookieHeader === null || cookieHeader === "") return this.#sessionOf(NOTHING_TO_LOAD, onUse);
		if (this.#lazy) return this.#sessionOf(() => this.#loadLazily(cookieHeader), onUse);
		const loaded = runSteps(this.#loadSteps(cookieHeader));
		return isPromiseLike(loaded) ? loaded.then((record) => this.#sessionOf(record ?? undefined, onUse)) : this.#sessionOf(loaded ?? undefined, onUse);
	}

	/** A session with the app's options, from `source` (see the `Session` constructor). */
	#sessionOf(source: LoadedRecord | (() => LazyLoad) | undefined, onUse?: (session: Session<Data>) => void): Session<Data> {
		const { codec, clock, idleTimeoutMs, absoluteTimeoutMs, cookie } = this.options;
		return new Session<Data>(codec, clock, idleTimeoutMs, absoluteTimeoutMs, cookie.persist, source, onUse);
	}

	/**
	 * The load of a synchronous store (memory) or sealed cookie, without a generator: it runs on
	 * every request that uses its session. The rare expired record goes through `#dropExpired`.
	 */
	#loadLazily(cookieHeader: string): LazyLoad {
		const value = this.#cookieValue(cookieHeader);
		if (value === null) return { loaded: null, pending: null };
		if (this.#sealed) {
			let record: StoredRecord | null;
			try {
				record = this.#settled(this.#sealed.unseal(value));
			} catch (error) {
				throw this.#storeError("unseal", error);
			}
			return { loaded: this.#unsealed(record), pending: null };
		}
		const key = hashToken(value) as string;
		let record: StoredRecord | null;
		try {
			record = this.#settled(this.#store!.get(key));
		} catch (error) {
			throw this.#storeError("get", error);
		}
		const loaded = this.#liveRecord(value, key, record);
		if (loaded !== undefined) return { loaded, pending: null };
		const deferred: Array<Promise<void>> = [];
		this.#settled(runSteps(this.#dropExpired(key, record!, deferred)));
		if (deferred.length === 0) return { loaded: null, pending: null };
		const pending = Promise.all(deferred).then(() => undefined);
		// Awaited by commit; until then a rejection must not count as unhandled.
		pending.catch(() => undefined);
		return { loaded: null, pending };
	}

	/** A synchronous store's answer; a promise means it is not synchronous after all. */
	#settled<T>(value: T | PromiseLike<T>): T {
		if (isPromiseLike(value)) {
			throw new SessionStoreError(this.options.store.name, "the store says it is synchronous but returned a promise; drop `synchronous: true` from it.");
		}
		return value;
	}

	/** Reads the cookie and loads its record, for any store: `null` for no session. An expired record is deleted. */
	*#loadSteps(cookieHeader: string): Steps<LoadedRecord | null> {
		const value = this.#cookieValue(cookieHeader);
		if (value === null) return null;
		if (this.#sealed) {
			let record: StoredRecord | null;
			try {
				record = (yield this.#sealed.unseal(value)) as StoredRecord | null;
			} catch (error) {
				throw this.#storeError("unseal", error);
			}
			return this.#unsealed(record);
		}
		const key = (yield hashToken(value)) as string;
		let record: StoredRecord | null;
		try {
			record = (yield this.#store!.get(key)) as StoredRecord | null;
		} catch (error) {
			throw this.#storeError("get", error);
		}
		const loaded = this.#liveRecord(value, key, record);
		if (loaded !== undefined) return loaded;
		yield* this.#dropExpired(key, record!, null);
		return null;
	}

	/** The session cookie's value, or `null` (with the event saying why) when there is none to load. */
	#cookieValue(cookieHeader: string): string | null {
		const read = readSessionCookie(cookieHeader, this.cookieName, this.#maxCookieBytes);
		if (read.kind === "absent") return null;
		if (read.kind === "rejected") {
			this.#emit({ type: "cookie-rejected", reason: read.reason });
			return null;
		}
		if (!this.#sealed && !isWellFormedToken(read.value)) {
			this.#emit({ type: "cookie-rejected", reason: "malformed" });
			return null;
		}
		return read.value;
	}

	/** An unsealed cookie's record if it is live; `null` otherwise. */
	#unsealed(record: StoredRecord | null): LoadedRecord | null {
		if (record === null) {
			this.#emit({ type: "cookie-rejected", reason: "unsealable" });
			return null;
		}
		const reason = this.#expiryReason(record);
		if (reason !== null) {
			this.#emit({ type: "session-expired", id: null, reason });
			return null;
		}
		return { token: null, key: null, record };
	}

	/** The loaded record if it is live; `null` if there is none; `undefined` if it expired (to drop). */
	#liveRecord(token: string, key: string, record: StoredRecord | null): LoadedRecord | null | undefined {
		if (record === null) {
			this.#emit({ type: "session-unknown", id: key });
			return null;
		}
		const reason = this.#expiryReason(record);
		if (reason === null) return { token, key, record };
		this.#emit({ type: "session-expired", id: key, reason });
		return undefined;
	}

	/** Deletes an expired record and tells `onDestroy`; a lazy load defers that to `deferred`. */
	*#dropExpired(key: string, record: StoredRecord, deferred: Array<Promise<void>> | null): Steps<void> {
		yield* this.#deleteOrFail(this.#store!, key);
		const notified = this.#notifyDestroyed({ id: key, subject: record.subject, reason: "expired" });
		if (notified) {
			if (deferred) deferred.push(notified);
			else yield notified;
		}
	}

	#expiryReason(record: StoredRecord): "absolute" | "idle" | null {
		const now = this.options.clock();
		return now >= record.absoluteExpiresAt ? "absolute" : now >= record.idleExpiresAt ? "idle" : null;
	}

	discard(session: Session<Data>): void {
		session[DISCARD]();
	}

	unavailable(error: unknown): Session<Data> {
		return this.#sessionOf(() => {
			throw error;
		});
	}

	commit(session: Session<Data>, request: { secure: boolean }): CommitResult | Promise<CommitResult> {
		if (session[CLOSE]()) {
			// A second commit would apply the request's changes again: an increment would count twice.
			throw new SessionUsageError("sessions.commit(session) was called twice for one session: a session is committed once, at the end of its request.");
		}
		// Never read nor changed in this request: nothing to write, nothing to refresh.
		if (!session[USED]) return NO_CHANGE;
		const state = session[STATE];
		if (this.#nothingToCommit(state)) return NO_CHANGE;
		const store = this.#store;
		if (this.#lazy && store !== null && store.merge !== undefined && state.modified && state.stored && state.pending === null && state.retired.length === 0) {
			return this.#mergeSynchronously(store, state, request);
		}
		return runSteps(this.#sealed ? this.#commitSealed(this.#sealed, state, request) : this.#commitStored(store!, state, request));
	}

	/**
	 * The commit of the common write (changes to a stored session, nothing retired) with a
	 * synchronous store: `#commitStored`'s merge, without a generator, which was 7% of the
	 * instructions of a counter request with the memory store.
	 */
	#mergeSynchronously(store: SessionStore, state: SessionState, request: { secure: boolean }): CommitResult {
		const now = this.options.clock();
		const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, state.absoluteExpiresAt);
		this.#checkSize(state);
		let written: boolean;
		try {
			written = this.#settled(store.merge!(state.key!, changesOf(state, idleExpiresAt), idleExpiresAt));
		} catch (error) {
			if (error instanceof SessionTooLargeError) throw error;
			throw this.#storeError("merge", error);
		}
		const setCookie = this.#afterUpdate(state, written, request, now, idleExpiresAt);
		return setCookie === null ? NO_CHANGE : { setCookie };
	}

	/** After a merge or replace of a stored session: the cookie to send, or `null`. */
	#afterUpdate(state: SessionState, written: boolean, request: { secure: boolean }, now: number, idleExpiresAt: number): string | null {
		if (!written) {
			// A parallel request destroyed or renewed this session first: do not bring it back, and
			// send no cookie, which could replace the renewed session's newer one in the browser.
			this.#emit({ type: "session-lost", id: state.key!, reason: "destroyed-concurrently" });
			return null;
		}
		state.idleExpiresAt = idleExpiresAt;
		return this.#cookieFor(state, state.token!, request, now, idleExpiresAt, state.rememberMeChanged);
	}

	*#commitStored(store: SessionStore, state: SessionState, request: { secure: boolean }): Steps<CommitResult> {
		if (state.pending) {
			const pending = state.pending;
			state.pending = null;
			yield pending;
		}

		const now = this.options.clock();
		const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, state.absoluteExpiresAt);
		let setCookie: string | null = null;

		if (state.modified) {
			this.#checkSize(state);
			if (!state.stored) {
				const record = recordOf(state, idleExpiresAt);
				// A new session left empty (a value set then deleted, a flash shown at once) is not
				// stored: no record, no cookie.
				if (!isEmptyRecord(state, record)) {
					const token = generateToken();
					const key = (yield hashToken(token)) as string;
					try {
						yield store.set(key, record, idleExpiresAt);
					} catch (error) {
						throw this.#storeError("set", error);
					}
					const previousId = state.retired.find((retired) => retired.reason === "renewed")?.key ?? null;
					if (previousId !== null && !((yield* this.#stillLive(store, previousId)) as boolean)) {
						// A parallel request ended the session this one renews (a logout, destroyBySubject):
						// its copy under the new key must not outlive it, nor its cookie reach the browser.
						yield* this.#deleteOrFail(store, key);
						state.retired.length = 0;
						this.#emit({ type: "session-lost", id: previousId, reason: "destroyed-concurrently" });
						return NO_CHANGE;
					}
					state.token = token;
					state.key = key;
					state.stored = true;
					state.idleExpiresAt = idleExpiresAt;
					this.#emit(state.renewed ? { type: "session-renewed", id: key, previousId } : { type: "session-created", id: key });
					setCookie = this.#cookieFor(state, token, request, now, idleExpiresAt, true);
				}
			} else {
				setCookie = yield* this.#updateStored(store, state, request, now, idleExpiresAt);
			}
		} else if (state.stored && this.#touchDue(state, now)) {
			// A persistent cookie goes out again with the touch (a fresh Max-Age): only if the session
			// is still there, which an empty merge tells and `touch` does not. A parallel renew or
			// logout may have ended it, and its old token must not replace the browser's newer cookie.
			const persists = this.#persists(state);
			if (persists && store.merge) {
				setCookie = yield* this.#updateStored(store, state, request, now, idleExpiresAt);
			} else {
				// idleExpiresAt is already capped at the absolute deadline: it is also the backend's expiry.
				try {
					yield store.touch(state.key!, idleExpiresAt, idleExpiresAt);
				} catch (error) {
					throw this.#storeError("touch", error);
				}
				state.idleExpiresAt = idleExpiresAt;
				if (persists) {
					// Without a merge, a read after the touch tells whether the session is still there.
					if ((yield* this.#stillLive(store, state.key!)) as boolean) setCookie = this.#cookieFor(state, state.token!, request, now, idleExpiresAt, false);
					else this.#emit({ type: "session-lost", id: state.key!, reason: "destroyed-concurrently" });
				}
			}
		}

		// Old keys go last: if writing the new record failed, the old session still works.
		for (const retired of state.retired) {
			if (retired.reason === "destroyed") yield* this.#endDestroyed(store, retired);
			else yield* this.#deleteOrFail(store, retired.key);
		}
		state.retired.length = 0;

		if (setCookie === null && state.destroyed && !state.stored) setCookie = serializeExpiredCookie(this.options.cookie, this.#secure(request));
		return setCookie === null ? NO_CHANGE : { setCookie };
	}

	/** Writes the request's changes to its stored session (a merge, else a replace); the cookie to send, or `null`. */
	*#updateStored(store: SessionStore, state: SessionState, request: { secure: boolean }, now: number, idleExpiresAt: number): Steps<string | null> {
		let written: boolean;
		try {
			if (store.merge) written = (yield store.merge(state.key!, changesOf(state, idleExpiresAt), idleExpiresAt)) as boolean;
			else written = (yield store.replace(state.key!, recordOf(state, idleExpiresAt), idleExpiresAt)) as boolean;
		} catch (error) {
			if (error instanceof SessionTooLargeError) throw error;
			throw this.#storeError(store.merge ? "merge" : "replace", error);
		}
		return this.#afterUpdate(state, written, request, now, idleExpiresAt);
	}

	/**
	 * Deletes the record of a `destroy()`ed session, and tells `onDestroy` unless a parallel
	 * logout, `destroyById` or `destroyBySubject` (in another app instance too) ended it first and
	 * told it already. That check costs a read, only with listeners.
	 */
	*#endDestroyed(store: SessionStore, retired: RetiredKey): Steps<void> {
		const untold = this.#destroyListeners.size > 0 && ((yield* this.#notEndedElsewhere(store, retired)) as boolean);
		yield* this.#deleteOrFail(store, retired.key);
		this.#emit({ type: "session-destroyed", id: retired.key });
		if (untold) yield this.#notifyDestroyed({ id: retired.key, subject: retired.subject, reason: "destroyed" });
	}

	/**
	 * True unless another request or instance ended the session: its record is still there, or it
	 * is gone only because it expired during this request (a backend's TTL, a get that drops an
	 * expired record), which nobody reports. A request that outlived the deadline cannot tell that
	 * from another instance's logout in the meantime: that one may be reported twice.
	 */
	*#notEndedElsewhere(store: SessionStore, retired: RetiredKey): Steps<boolean> {
		const record = (yield* this.#getOrFail(store, retired.key)) as StoredRecord | null;
		return record !== null || this.options.clock() >= retired.expiresAt;
	}

	/** True if `key` still holds a live record. */
	*#stillLive(store: SessionStore, key: string): Steps<boolean> {
		const record = (yield* this.#getOrFail(store, key)) as StoredRecord | null;
		return record !== null && this.#expiryReason(record) === null;
	}

	*#getOrFail(store: SessionStore, key: string): Steps<StoredRecord | null> {
		try {
			return (yield store.get(key)) as StoredRecord | null;
		} catch (error) {
			throw this.#storeError("get", error);
		}
	}

	*#deleteOrFail(store: SessionStore, key: string): Steps<void> {
		try {
			yield store.delete(key);
		} catch (error) {
			throw this.#storeError("delete", error);
		}
	}

	*#commitSealed(sealed: SealedCookieStore, state: SessionState, request: { secure: boolean }): Steps<CommitResult> {
		const now = this.options.clock();
		if (state.modified || (state.stored && this.#touchDue(state, now))) {
			const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, state.absoluteExpiresAt);
			this.#checkSize(state);
			const record = recordOf(state, idleExpiresAt);
			if (!state.stored && isEmptyRecord(state, record)) return this.#sealedEnd(state, request);
			let value: string;
			try {
				value = (yield sealed.seal(record)) as string;
			} catch (error) {
				if (error instanceof SessionTooLargeError) throw error;
				throw this.#storeError("seal", error);
			}
			const isNew = !state.stored;
			state.stored = true;
			state.idleExpiresAt = idleExpiresAt;
			if (state.destroyed) this.#emit({ type: "session-destroyed", id: null });
			if (isNew) this.#emit(state.renewed ? { type: "session-renewed", id: null, previousId: null } : { type: "session-created", id: null });
			return { setCookie: this.#cookieFor(state, value, request, now, idleExpiresAt, true) };
		}
		return this.#sealedEnd(state, request);
	}

	/** A sealed-cookie commit that seals nothing: the expired cookie of a destroyed session, or no cookie. */
	#sealedEnd(state: SessionState, request: { secure: boolean }): CommitResult {
		if (state.destroyed && !state.stored) {
			this.#emit({ type: "session-destroyed", id: null });
			return { setCookie: serializeExpiredCookie(this.options.cookie, this.#secure(request)) };
		}
		return NO_CHANGE;
	}

	/** Read but not changed, nothing retired, no touch due: the common read-only request. */
	#nothingToCommit(state: SessionState): boolean {
		return !state.modified && !state.destroyed && state.pending === null && state.retired.length === 0 && !(state.stored && this.#touchDue(state, this.options.clock()));
	}

	#touchDue(state: SessionState, now: number): boolean {
		const lastActive = state.idleExpiresAt - this.options.idleTimeoutMs;
		return now - lastActive >= this.options.touchAfterMs && state.idleExpiresAt < state.absoluteExpiresAt;
	}

	/** The session's cookie carries Max-Age: its own `rememberMe` choice, else the app's `cookie.persist`. */
	#persists(state: SessionState): boolean {
		return state.rememberMe ?? this.options.cookie.persist;
	}

	/**
	 * The cookie to send: always for a new value or lifetime (`resend`); otherwise only when a
	 * persistent cookie needs a fresh Max-Age.
	 */
	#cookieFor(state: SessionState, value: string, request: { secure: boolean }, now: number, expiresAt: number, resend: boolean): string | null {
		const persist = this.#persists(state);
		if (!resend && !persist) return null;
		const maxAge = persist ? Math.max(1, Math.ceil((expiresAt - now) / 1000)) : undefined;
		return serializeSessionCookie(this.options.cookie, value, this.#secure(request), maxAge);
	}

	/** Whether the cookie gets `Secure`. `request.secure` may be a getter: it is read only here, when a cookie is sent. */
	#secure(request: { secure: boolean }): boolean {
		const secure = this.options.cookie.secure;
		return secure === "auto" ? request.secure : secure;
	}

	/** Throws `SessionTooLargeError` when the record `state` would store is over `maxSize`. */
	#checkSize(state: SessionState): void {
		const maxSize = this.options.maxSize;
		if (stateSizeBound(state) <= maxSize) return;
		const size = stateSize(state);
		if (size > maxSize) throw new SessionTooLargeError(size, maxSize);
	}

	/**
	 * Runs the `onDestroy` callbacks in order; a promise only if one of them returned one. Once
	 * per session: two operations that end it side by side in this instance both get here.
	 */
	#notifyDestroyed(session: DestroyedSession): void | Promise<void> {
		if (this.#destroyListeners.size === 0 || !this.#firstEnd(session.id)) return;
		return runSteps(this.#notifySteps(session));
	}

	/** True the first time `id` is reported ended; it is then remembered (the oldest forgotten past the bound). */
	#firstEnd(id: string): boolean {
		const ended = this.#ended;
		if (ended.has(id)) return false;
		ended.add(id);
		if (ended.size > REMEMBERED_ENDS) ended.delete(ended.values().next().value!);
		return true;
	}

	*#notifySteps(session: DestroyedSession): Steps<void> {
		for (const listener of [...this.#destroyListeners]) yield listener(session);
	}

	#requireStore(feature: string, method: keyof SessionStore): SessionStore {
		const store = this.#store;
		if (!store || typeof store[method] !== "function") {
			throw new SessionUsageError(`${feature} needs a store with ${String(method)}(); the ${this.options.store.name} store has none.`);
		}
		return store;
	}

	async listBySubject(subject: string): Promise<SessionInfo[]> {
		const store = this.#requireStore("listBySubject", "listBySubject");
		checkSubject(subject, "sessions.listBySubject(subject)");
		let listed;
		try {
			listed = await store.listBySubject!(subject);
		} catch (error) {
			throw this.#storeError("listBySubject", error);
		}
		const now = this.options.clock();
		return listed
			.filter((s) => s.idleExpiresAt > now && s.absoluteExpiresAt > now)
			.map((s) => ({ id: s.key, createdAt: s.createdAt, idleExpiresAt: s.idleExpiresAt, absoluteExpiresAt: s.absoluteExpiresAt, expiresAt: Math.min(s.idleExpiresAt, s.absoluteExpiresAt) }));
	}

	async destroyBySubject(subject: string): Promise<number> {
		const store = this.#requireStore("destroyBySubject", "deleteBySubject");
		checkSubject(subject, "sessions.destroyBySubject(subject)");
		const ids = await this.#idsToTell(store, subject);
		let deleted: number;
		try {
			deleted = await store.deleteBySubject!(subject);
		} catch (error) {
			throw this.#storeError("deleteBySubject", error);
		}
		// A request renewing one of these sessions writes its new key, then checks that the old
		// one is still live. A store that reads the subject's keys before that write and deletes
		// the old key after that check (Redis, MongoDB, a PostgreSQL DELETE still running) leaves
		// the new key; it was written before the first pass ended, so this second one finds it.
		let survivors: string[];
		try {
			survivors = await this.#idsToTell(store, subject);
			try {
				deleted += await store.deleteBySubject!(subject);
			} catch (error) {
				throw this.#storeError("deleteBySubject", error);
			}
		} catch (error) {
			// The first pass ended these sessions all the same.
			await this.#tellEnded(ids, subject);
			throw error;
		}
		await this.#tellEnded([...ids, ...survivors], subject);
		return deleted;
	}

	/** Outside the store's try: a failing onDestroy callback is the app's error, not the store's. */
	async #tellEnded(ids: readonly string[], subject: string): Promise<void> {
		for (const id of ids) await this.#notifyDestroyed({ id, subject, reason: "by-subject" });
	}

	/** The ids of `subject`'s sessions, for `onDestroy`: listed only when someone listens (and the store can). */
	async #idsToTell(store: SessionStore, subject: string): Promise<string[]> {
		if (this.#destroyListeners.size === 0 || !store.listBySubject) return [];
		try {
			return (await store.listBySubject(subject)).map((s) => s.key);
		} catch (error) {
			throw this.#storeError("listBySubject", error);
		}
	}

	async destroyById(id: string): Promise<void> {
		if (typeof id !== "string" || !isWellFormedKey(id)) return;
		const store = this.#requireStore("destroyById", "delete");
		let record: StoredRecord | null;
		try {
			record = await store.get(id);
		} catch (error) {
			throw this.#storeError("get", error);
		}
		// No session, or one that has ended already: nothing to end, nobody to tell.
		if (record === null) return;
		try {
			await store.delete(id);
		} catch (error) {
			throw this.#storeError("delete", error);
		}
		if (this.#expiryReason(record) === null) await this.#notifyDestroyed({ id, subject: record.subject, reason: "by-id" });
	}

	async count(): Promise<number> {
		const store = this.#requireStore("count", "count");
		try {
			return await store.count!();
		} catch (error) {
			throw this.#storeError("count", error);
		}
	}

	async gc(): Promise<number> {
		const store = this.#store;
		if (!store?.gc) return 0;
		try {
			return await store.gc();
		} catch (error) {
			throw this.#storeError("gc", error);
		}
	}

	onDestroy(callback: (session: DestroyedSession) => void | Promise<void>): () => void {
		this.#destroyListeners.add(callback);
		return () => this.#destroyListeners.delete(callback);
	}

	async close(): Promise<void> {
		await this.options.store.close?.();
	}
}
