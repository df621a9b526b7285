/** Stable codes carried by every sessionkit error; check `code` or `instanceof`, never the message. */
export type SessionErrorCode =
	| "SESSION_CONFIG"
	| "SESSION_STORE"
	| "SESSION_TOO_LARGE"
	| "SESSION_NOT_LOADED"
	| "SESSION_CODEC"
	| "SESSION_USAGE";

/** Base class of every error sessionkit throws. */
export class SessionError extends Error {
	readonly code: SessionErrorCode;

	constructor(code: SessionErrorCode, message: string, options?: { cause?: unknown }) {
		super(message, options);
		this.name = new.target.name;
		this.code = code;
	}
}

/** A bad option, thrown by `createSessions` or a store factory at startup, never at a request. */
export class SessionConfigError extends SessionError {
	/** The option at fault, e.g. `"cookie.sameSite"`. */
	readonly option: string;

	constructor(option: string, message: string, options?: { cause?: unknown }) {
		super("SESSION_CONFIG", `sessionkit: option "${option}" ${message}`, options);
		this.option = option;
	}
}

/** The store failed (connection lost, timeout, permission denied). The driver's error is the `cause`. */
export class SessionStoreError extends SessionError {
	/** The store's name, e.g. `"postgres"`. */
	readonly store: string;

	constructor(store: string, message: string, options?: { cause?: unknown }) {
		super("SESSION_STORE", `sessionkit/${store}: ${message}`, options);
		this.store = store;
	}
}

/** The encoded session would exceed the configured size limit. */
export class SessionTooLargeError extends SessionError {
	readonly limit: number;
	readonly size: number;

	constructor(size: number, limit: number, what = "maxSize") {
		super(
			"SESSION_TOO_LARGE",
			`sessionkit: the session is ${size} bytes encoded, over the ${what} limit of ${limit} bytes. Store less in the session, or raise ${what}.`,
		);
		this.limit = limit;
		this.size = size;
	}
}

/** A value the codec cannot round-trip (a function, a class instance, a polluting key). */
export class SessionCodecError extends SessionError {
	constructor(message: string, options?: { cause?: unknown }) {
		super("SESSION_CODEC", `sessionkit: ${message}`, options);
	}
}

/** The session was asked for on a request the middleware never saw. */
export class SessionNotLoadedError extends SessionError {
	constructor(where: string) {
		super(
			"SESSION_NOT_LOADED",
			`sessionkit: no session on this request. Is ${where} installed before this route?`,
		);
	}
}

/** The API was used in a way that cannot work (e.g. incrementing a string). */
export class SessionUsageError extends SessionError {
	constructor(message: string) {
		super("SESSION_USAGE", `sessionkit: ${message}`);
	}
}
