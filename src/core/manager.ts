import { readSessionCookie, serializeExpiredCookie, serializeSessionCookie } from "./cookie.js";
import { SessionError, SessionStoreError, SessionTooLargeError } from "./errors.js";
import type { DestroyedSession, SessionEvent } from "./events.js";
import type { ResolvedOptions, SessionOptions } from "./options.js";
import { resolveOptions } from "./options.js";
import { changesOf, encodedSize, recordOf, Session, STATE } from "./session.js";
import type { SessionState } from "./session.js";
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

/** Headers every response that sets the session cookie carries: no cache may keep or share it. */
export const SESSION_RESPONSE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
	"Cache-Control": "no-store",
	Vary: "Cookie",
});

/** Made once per app by `createSessions`; adapters call `load` and `commit` per request. */
export interface SessionManager<Data extends object = Record<string, unknown>> {
	/** The cookie name, as configured. */
	readonly cookieName: string;
	/** The validated options with defaults filled in. */
	readonly options: Readonly<ResolvedOptions>;
	/** The session for a request, from its `Cookie` header. One store round trip at most; none without a cookie. */
	load(cookieHeader: string | null | undefined): Promise<Session<Data>>;
	/**
	 * Writes what the request changed (or nothing) and says which `Set-Cookie` to send. Call it
	 * after the handler, before headers are sent. `secure`: the request came over HTTPS.
	 * Rejects with `SessionStoreError` or `SessionTooLargeError`; the response must then fail.
	 */
	commit(session: Session<Data>, request: { secure: boolean }): Promise<CommitResult>;
	/** The live sessions of `subject` (needs a store with `listBySubject`). */
	listBySubject(subject: string): Promise<SessionInfo[]>;
	/** Ends every session of `subject` ("log out everywhere"); resolves to the number ended. */
	destroyBySubject(subject: string): Promise<number>;
	/** Ends the session with this public id; a no-op if it does not exist. */
	destroyById(id: string): Promise<void>;
	/** The number of live sessions (needs a store with `count`). */
	count(): Promise<number>;
	/** Deletes expired sessions now, where the store needs it; resolves to the number deleted. */
	gc(): Promise<number>;
	/** Runs `callback` whenever a session ends; returns a function that unsubscribes. */
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
	const resolved = resolveOptions(options, () => memoryStore());
	return new Manager<Data>(resolved);
}

class Manager<Data extends object> implements SessionManager<Data> {
	readonly options: ResolvedOptions;
	readonly cookieName: string;
	readonly #store: SessionStore | null;
	readonly #sealed: SealedCookieStore | null;
	readonly #destroyListeners = new Set<(session: DestroyedSession) => void | Promise<void>>();
	readonly #maxCookieBytes: number;

	constructor(options: ResolvedOptions) {
		this.options = options;
		this.cookieName = options.cookie.name;
		const store = options.store;
		this.#sealed = isSealedCookieStore(store) ? store : null;
		this.#store = isSealedCookieStore(store) ? null : store;
		this.#maxCookieBytes = this.#sealed ? this.#sealed.maxCookieBytes : 64;
	}

	#emit(event: SessionEvent): void {
		this.options.onEvent?.(event);
	}

	#newSession(): Session<Data> {
		const { codec, clock, idleTimeoutMs, absoluteTimeoutMs } = this.options;
		return new Session<Data>(codec, clock, idleTimeoutMs, absoluteTimeoutMs);
	}

	#storeError(operation: string, error: unknown): SessionError {
		const name = this.options.store.name;
		this.#emit({ type: "store-error", store: name, operation, error });
		if (error instanceof SessionError) return error;
		const detail = error instanceof Error ? error.message : String(error);
		return new SessionStoreError(name, `${operation} failed: ${detail}`, { cause: error });
	}

	async load(cookieHeader: string | null | undefined): Promise<Session<Data>> {
		const read = readSessionCookie(cookieHeader, this.cookieName, this.#maxCookieBytes);
		if (read.kind === "absent") return this.#newSession();
		if (read.kind === "rejected") {
			this.#emit({ type: "cookie-rejected", reason: read.reason });
			return this.#newSession();
		}
		return this.#sealed ? this.#loadSealed(this.#sealed, read.value) : this.#loadStored(this.#store!, read.value);
	}

	async #loadStored(store: SessionStore, token: string): Promise<Session<Data>> {
		if (!isWellFormedToken(token)) {
			this.#emit({ type: "cookie-rejected", reason: "malformed" });
			return this.#newSession();
		}
		const hashed = hashToken(token);
		const key = typeof hashed === "string" ? hashed : await hashed;
		let record: StoredRecord | null;
		try {
			record = await store.get(key);
		} catch (error) {
			throw this.#storeError("get", error);
		}
		if (record === null) {
			this.#emit({ type: "session-unknown", id: key });
			return this.#newSession();
		}
		if (await this.#expired(record, key)) return this.#newSession();
		const { codec, clock, idleTimeoutMs, absoluteTimeoutMs } = this.options;
		return new Session<Data>(codec, clock, idleTimeoutMs, absoluteTimeoutMs, { token, key, record });
	}

	async #loadSealed(sealed: SealedCookieStore, value: string): Promise<Session<Data>> {
		let record: StoredRecord | null;
		try {
			record = await sealed.unseal(value);
		} catch (error) {
			throw this.#storeError("unseal", error);
		}
		if (record === null) {
			this.#emit({ type: "cookie-rejected", reason: "unsealable" });
			return this.#newSession();
		}
		if (await this.#expired(record, null)) return this.#newSession();
		const { codec, clock, idleTimeoutMs, absoluteTimeoutMs } = this.options;
		return new Session<Data>(codec, clock, idleTimeoutMs, absoluteTimeoutMs, { token: null, key: null, record });
	}

	/** True (and the record deleted) if the record is past either deadline. */
	async #expired(record: StoredRecord, key: string | null): Promise<boolean> {
		const now = this.options.clock();
		const reason = now >= record.absoluteExpiresAt ? "absolute" : now >= record.idleExpiresAt ? "idle" : null;
		if (reason === null) return false;
		this.#emit({ type: "session-expired", id: key, reason });
		if (key !== null && this.#store) {
			try {
				await this.#store.delete(key);
			} catch (error) {
				throw this.#storeError("delete", error);
			}
			await this.#notifyDestroyed({ id: key, subject: record.subject, reason: "expired" });
		}
		return true;
	}

	async commit(session: Session<Data>, request: { secure: boolean }): Promise<CommitResult> {
		const state = session[STATE];
		const secure = this.options.cookie.secure === "auto" ? request.secure : this.options.cookie.secure;
		if (this.#sealed) return this.#commitSealed(this.#sealed, state, secure);
		const store = this.#store!;

		const now = this.options.clock();
		const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, state.absoluteExpiresAt);
		let setCookie: string | null = null;

		if (state.modified) {
			if (!state.stored) {
				const record = recordOf(state, idleExpiresAt);
				this.#checkSize(record);
				const token = generateToken();
				const hashed = hashToken(token);
				const key = typeof hashed === "string" ? hashed : await hashed;
				const expiresAt = Math.min(idleExpiresAt, record.absoluteExpiresAt);
				try {
					await store.set(key, record, expiresAt);
				} catch (error) {
					throw this.#storeError("set", error);
				}
				const previousId = state.retired.find((retired) => retired.reason === "renewed")?.key ?? null;
				state.token = token;
				state.key = key;
				state.stored = true;
				state.idleExpiresAt = idleExpiresAt;
				this.#emit(state.renewed ? { type: "session-renewed", id: key, previousId } : { type: "session-created", id: key });
				setCookie = this.#cookieFor(token, secure, now, expiresAt, true);
			} else {
				const expiresAt = Math.min(idleExpiresAt, state.absoluteExpiresAt);
				let written: boolean;
				try {
					if (store.merge) {
						const changes = changesOf(state, idleExpiresAt);
						this.#checkSize(recordOf(state, idleExpiresAt));
						written = await store.merge(state.key!, changes, expiresAt);
					} else {
						const record = recordOf(state, idleExpiresAt);
						this.#checkSize(record);
						written = await store.replace(state.key!, record, expiresAt);
					}
				} catch (error) {
					if (error instanceof SessionTooLargeError) throw error;
					throw this.#storeError(store.merge ? "merge" : "replace", error);
				}
				if (written) {
					state.idleExpiresAt = idleExpiresAt;
					setCookie = this.#cookieFor(state.token!, secure, now, expiresAt, false);
				} else {
					// A parallel request destroyed or renewed this session first: do not bring it back.
					this.#emit({ type: "session-lost", id: state.key!, reason: "destroyed-concurrently" });
					setCookie = serializeExpiredCookie(this.options.cookie, secure);
				}
			}
		} else if (state.stored && this.#touchDue(state, now)) {
			const expiresAt = Math.min(idleExpiresAt, state.absoluteExpiresAt);
			try {
				await store.touch(state.key!, idleExpiresAt, expiresAt);
			} catch (error) {
				throw this.#storeError("touch", error);
			}
			state.idleExpiresAt = idleExpiresAt;
			setCookie = this.#cookieFor(state.token!, secure, now, expiresAt, false);
		}

		// Old keys go last: if writing the new record failed, the old session still works.
		for (const retired of state.retired) {
			try {
				await store.delete(retired.key);
			} catch (error) {
				throw this.#storeError("delete", error);
			}
			if (retired.reason === "destroyed") {
				this.#emit({ type: "session-destroyed", id: retired.key });
				await this.#notifyDestroyed({ id: retired.key, subject: retired.subject, reason: "destroyed" });
			}
		}
		state.retired.length = 0;

		if (setCookie === null && state.destroyed && !state.stored) setCookie = serializeExpiredCookie(this.options.cookie, secure);
		return { setCookie };
	}

	async #commitSealed(sealed: SealedCookieStore, state: SessionState, secure: boolean): Promise<CommitResult> {
		const now = this.options.clock();
		if (state.modified || (state.stored && this.#touchDue(state, now))) {
			const idleExpiresAt = Math.min(now + this.options.idleTimeoutMs, state.absoluteExpiresAt);
			const record = recordOf(state, idleExpiresAt);
			this.#checkSize(record);
			let value: string;
			try {
				value = await sealed.seal(record);
			} catch (error) {
				if (error instanceof SessionTooLargeError) throw error;
				throw this.#storeError("seal", error);
			}
			const isNew = !state.stored;
			state.stored = true;
			state.idleExpiresAt = idleExpiresAt;
			if (state.destroyed) this.#emit({ type: "session-destroyed", id: null });
			if (isNew) this.#emit(state.renewed ? { type: "session-renewed", id: null, previousId: null } : { type: "session-created", id: null });
			return { setCookie: this.#cookieFor(value, secure, now, Math.min(idleExpiresAt, record.absoluteExpiresAt), true) };
		}
		if (state.destroyed && !state.stored) {
			this.#emit({ type: "session-destroyed", id: null });
			return { setCookie: serializeExpiredCookie(this.options.cookie, secure) };
		}
		return { setCookie: null };
	}

	#touchDue(state: SessionState, now: number): boolean {
		const lastActive = state.idleExpiresAt - this.options.idleTimeoutMs;
		return now - lastActive >= this.options.touchAfterMs && state.idleExpiresAt < state.absoluteExpiresAt;
	}

	/** The cookie to send: always for a new value; for an existing one only when `persist` needs a fresh Max-Age. */
	#cookieFor(value: string, secure: boolean, now: number, expiresAt: number, isNewValue: boolean): string | null {
		const persist = this.options.cookie.persist;
		if (!isNewValue && !persist) return null;
		const maxAge = persist ? Math.max(1, Math.ceil((expiresAt - now) / 1000)) : undefined;
		return serializeSessionCookie(this.options.cookie, value, secure, maxAge);
	}

	#checkSize(record: StoredRecord): void {
		const size = encodedSize(record);
		if (size > this.options.maxSize) throw new SessionTooLargeError(size, this.options.maxSize);
	}

	async #notifyDestroyed(session: DestroyedSession): Promise<void> {
		for (const listener of this.#destroyListeners) await listener(session);
	}

	#requireStore(feature: string, method: keyof SessionStore): SessionStore {
		const store = this.#store;
		if (!store || typeof store[method] !== "function") {
			throw new SessionError("SESSION_USAGE", `sessionkit: ${feature} needs a store with ${String(method)}(); the ${this.options.store.name} store has none.`);
		}
		return store;
	}

	async listBySubject(subject: string): Promise<SessionInfo[]> {
		const store = this.#requireStore("listBySubject", "listBySubject");
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
		let ids: string[] = [];
		try {
			if (this.#destroyListeners.size > 0 && store.listBySubject) ids = (await store.listBySubject(subject)).map((s) => s.key);
			const deleted = await store.deleteBySubject!(subject);
			for (const id of ids) await this.#notifyDestroyed({ id, subject, reason: "by-subject" });
			return deleted;
		} catch (error) {
			throw this.#storeError("deleteBySubject", error);
		}
	}

	async destroyById(id: string): Promise<void> {
		if (typeof id !== "string" || !isWellFormedKey(id)) return;
		const store = this.#requireStore("destroyById", "delete");
		let subject: string | null = null;
		try {
			if (this.#destroyListeners.size > 0) subject = (await store.get(id))?.subject ?? null;
			await store.delete(id);
		} catch (error) {
			throw this.#storeError("delete", error);
		}
		await this.#notifyDestroyed({ id, subject, reason: "by-id" });
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
