import type { Codec } from "./codec.js";
import { defaultCodec } from "./codec.js";
import { SessionConfigError } from "./errors.js";
import type { SessionEvent } from "./events.js";
import type { AnyStore } from "./store.js";
import { isSealedCookieStore } from "./store.js";

/** Cookie settings. Every default is the safe choice. */
export interface CookieOptions {
	/** @default "sid" (generic: it does not name the stack) */
	name?: string;
	/** @default "/" */
	path?: string;
	/** Leave unset (the default) to keep the cookie to the exact host. */
	domain?: string;
	/** @default "lax" */
	sameSite?: "lax" | "strict" | "none";
	/** `"auto"`: Secure when the request came over HTTPS (as the adapter sees it). @default "auto" */
	secure?: "auto" | boolean;
	/** @default true */
	httpOnly?: boolean;
	/** Send `Max-Age` so the cookie outlives the browser session. @default false */
	persist?: boolean;
	/** CHIPS `Partitioned` attribute; needs `secure: true`. @default false */
	partitioned?: boolean;
}

/** Options of `createSessions`. Durations are seconds (at most 100 years); instants are epoch milliseconds. */
export interface SessionOptions {
	/** Where sessions live. @default memoryStore() (refused when NODE_ENV is "production") */
	store?: AnyStore;
	/** Seconds of inactivity after which a session expires. @default 1800 (30 minutes) */
	idleTimeout?: number;
	/** Seconds after creation after which a session expires however much it is used; at least `idleTimeout`. @default 86400 (24 hours), or idleTimeout if longer */
	absoluteTimeout?: number;
	/** Seconds between two writes that only extend the idle deadline. @default idleTimeout / 10 */
	touchAfter?: number;
	/** Largest encoded session (data + flash) in bytes. @default 65536 */
	maxSize?: number;
	cookie?: CookieOptions;
	/** Encodes each value. @default defaultCodec */
	codec?: Codec;
	/** The time source, epoch ms (a fraction is rounded down). Tests pass a controllable clock. @default Date.now */
	clock?: () => number;
	/** Receives diagnostics; must not throw. Never sees a raw token. */
	onEvent?: (event: SessionEvent) => void;
}

/** Options after validation, with every default filled in. */
export interface ResolvedOptions {
	store: AnyStore;
	idleTimeoutMs: number;
	absoluteTimeoutMs: number;
	touchAfterMs: number;
	maxSize: number;
	cookie: Required<Omit<CookieOptions, "domain">> & { domain: string | undefined };
	codec: Codec;
	clock: () => number;
	onEvent: ((event: SessionEvent) => void) | undefined;
}

const TOP_LEVEL = new Set(["store", "idleTimeout", "absoluteTimeout", "touchAfter", "maxSize", "cookie", "codec", "clock", "onEvent"]);
const COOKIE_KEYS = new Set(["name", "path", "domain", "sameSite", "secure", "httpOnly", "persist", "partitioned"]);
// RFC 6265 cookie-name: an RFC 7230 token, so nothing can inject an attribute.
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const COOKIE_PATH = /^\/[\x21-\x3a\x3c-\x7e]*$/;
// A sealed-cookie store keeps the value this many bytes under the browser's budget, for "name=".
const SEALED_NAME_LIMIT = 64;
const DOMAIN = /^\.?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

/**
 * The longest duration: 100 years. Past it, deadlines leave what stores can hold (PostgreSQL's
 * bigint, Redis's expiry times, MongoDB's dates), and every write would fail at run time.
 */
const MAX_SECONDS = 100 * 365.25 * 24 * 3600;

function seconds(option: string, value: unknown, fallback: number, { allowZero = false } = {}): number {
	if (value === undefined) return fallback;
	if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
		throw new SessionConfigError(option, `must be a ${allowZero ? "non-negative" : "positive"} number of seconds, got ${describe(value)}.`);
	}
	if (value > MAX_SECONDS) throw new SessionConfigError(option, `must be at most ${MAX_SECONDS} seconds (100 years), got ${describe(value)}.`);
	return value;
}

function bool(option: string, value: unknown, fallback: boolean): boolean {
	if (value === undefined) return fallback;
	if (typeof value !== "boolean") throw new SessionConfigError(option, `must be true or false, got ${describe(value)}.`);
	return value;
}

function describe(value: unknown): string {
	if (typeof value === "string") return JSON.stringify(value);
	if (typeof value === "number" || typeof value === "boolean" || value == null) return String(value);
	return typeof value;
}

function checkKeys(prefix: string, object: object, allowed: Set<string>): void {
	for (const key of Object.keys(object)) {
		if (!allowed.has(key)) throw new SessionConfigError(`${prefix}${key}`, `is not an option. Known: ${[...allowed].join(", ")}.`);
	}
}

function resolveCookie(input: unknown): ResolvedOptions["cookie"] {
	if (input === undefined) input = {};
	if (typeof input !== "object" || input === null) throw new SessionConfigError("cookie", `must be an object, got ${describe(input)}.`);
	checkKeys("cookie.", input, COOKIE_KEYS);
	const c = input as Record<string, unknown>;

	const name = c.name ?? "sid";
	if (typeof name !== "string" || !COOKIE_NAME.test(name)) {
		throw new SessionConfigError("cookie.name", `must be a cookie token (letters, digits and !#$%&'*+-.^_\`|~), got ${describe(name)}.`);
	}
	const path = c.path ?? "/";
	if (typeof path !== "string" || !COOKIE_PATH.test(path)) {
		throw new SessionConfigError("cookie.path", `must start with "/" and hold no ";", space or control character, got ${describe(path)}.`);
	}
	const domain = c.domain;
	if (domain !== undefined && (typeof domain !== "string" || !DOMAIN.test(domain))) {
		throw new SessionConfigError("cookie.domain", `must be a host name such as "example.com", got ${describe(domain)}.`);
	}
	const sameSiteRaw = c.sameSite ?? "lax";
	const sameSite = typeof sameSiteRaw === "string" ? sameSiteRaw.toLowerCase() : sameSiteRaw;
	if (sameSite !== "lax" && sameSite !== "strict" && sameSite !== "none") {
		throw new SessionConfigError("cookie.sameSite", `must be "lax", "strict" or "none", got ${describe(sameSiteRaw)}.`);
	}
	const secure = c.secure ?? "auto";
	if (secure !== "auto" && typeof secure !== "boolean") {
		throw new SessionConfigError("cookie.secure", `must be "auto", true or false, got ${describe(secure)}.`);
	}
	if (sameSite === "none" && secure !== true) {
		throw new SessionConfigError("cookie.sameSite", `"none" needs cookie.secure: true (browsers drop SameSite=None cookies without Secure).`);
	}
	// Browsers match the prefixes without regard to case (RFC 6265bis), and drop such a cookie
	// without Secure: "__host-sid" over HTTP would be lost without a word.
	const lowerName = name.toLowerCase();
	if (lowerName.startsWith("__host-") && (secure !== true || domain !== undefined || path !== "/")) {
		throw new SessionConfigError("cookie.name", `with the "__Host-" prefix needs secure: true, path "/" and no domain.`);
	}
	if (lowerName.startsWith("__secure-") && secure !== true) {
		throw new SessionConfigError("cookie.name", `with the "__Secure-" prefix needs secure: true.`);
	}
	const partitioned = bool("cookie.partitioned", c.partitioned, false);
	if (partitioned && secure !== true) throw new SessionConfigError("cookie.partitioned", `needs cookie.secure: true.`);
	return {
		name,
		path,
		domain,
		sameSite,
		secure,
		httpOnly: bool("cookie.httpOnly", c.httpOnly, true),
		persist: bool("cookie.persist", c.persist, false),
		partitioned,
	};
}

/**
 * The clock, in whole epoch milliseconds (a fraction would reach the stores' deadlines, see
 * above). `Date.now` as it is; a custom clock is checked once here and floored on every call.
 */
function resolveClock(clock: unknown): () => number {
	if (clock === undefined || clock === Date.now) return Date.now;
	if (typeof clock !== "function") throw new SessionConfigError("clock", "must be a function returning epoch milliseconds.");
	const now: unknown = clock();
	if (typeof now !== "number" || !Number.isFinite(now)) {
		throw new SessionConfigError("clock", `must return epoch milliseconds as a finite number, returned ${describe(now)}.`);
	}
	return () => Math.floor((clock as () => number)());
}

/** Validates every option and fills in defaults; throws `SessionConfigError` naming the option at fault. */
export function resolveOptions(input: SessionOptions | undefined, defaultStore: (clock: () => number) => AnyStore): ResolvedOptions {
	const options = (input ?? {}) as Record<string, unknown>;
	if (typeof options !== "object" || options === null) throw new SessionConfigError("options", "must be an object.");
	checkKeys("", options, TOP_LEVEL);

	const idle = seconds("idleTimeout", options.idleTimeout, 1800);
	const absolute = seconds("absoluteTimeout", options.absoluteTimeout, Math.max(86400, idle));
	if (absolute < idle) {
		throw new SessionConfigError("absoluteTimeout", `(${absolute} s) must not be shorter than idleTimeout (${idle} s).`);
	}
	const touchAfter = seconds("touchAfter", options.touchAfter, idle / 10, { allowZero: true });
	if (touchAfter >= idle) throw new SessionConfigError("touchAfter", `(${touchAfter} s) must be shorter than idleTimeout (${idle} s).`);

	const maxSize = options.maxSize ?? 65536;
	if (typeof maxSize !== "number" || !Number.isInteger(maxSize) || maxSize < 256) {
		throw new SessionConfigError("maxSize", `must be a whole number of bytes, at least 256, got ${describe(maxSize)}.`);
	}

	const codec = (options.codec ?? defaultCodec) as Codec;
	if (typeof codec !== "object" || codec === null || typeof codec.encode !== "function" || typeof codec.decode !== "function") {
		throw new SessionConfigError("codec", "must have encode(value) and decode(text) functions.");
	}
	const clock = resolveClock(options.clock);
	const onEvent = options.onEvent;
	if (onEvent !== undefined && typeof onEvent !== "function") throw new SessionConfigError("onEvent", "must be a function.");

	let store = options.store as AnyStore | undefined;
	if (store === undefined) {
		if (globalThis.process?.env?.NODE_ENV === "production") {
			throw new SessionConfigError("store", "is required in production: the memory store loses every session on restart and is not shared between processes.");
		}
		store = defaultStore(clock);
	} else if (typeof store !== "object" || store === null) {
		throw new SessionConfigError("store", `must be a store object, got ${describe(store)}.`);
	} else if (isSealedCookieStore(store)) {
		if (typeof store.seal !== "function" || typeof store.unseal !== "function") {
			throw new SessionConfigError("store", "is a sealed-cookie store without seal() and unseal().");
		}
	} else {
		for (const method of ["get", "set", "replace", "delete", "touch"] as const) {
			if (typeof (store as unknown as Record<string, unknown>)[method] !== "function") {
				throw new SessionConfigError("store", `has no ${method}() method; see the SessionStore interface.`);
			}
		}
	}

	// Whole milliseconds, so every deadline a store is given is one: Redis's PEXPIREAT and
	// PostgreSQL's bigint columns refuse a fraction (idleTimeout: 1000 / 3, say).
	const idleTimeoutMs = Math.max(1, Math.round(idle * 1000));
	const cookie = resolveCookie(options.cookie);
	if (isSealedCookieStore(store) && cookie.name.length >= SEALED_NAME_LIMIT) {
		throw new SessionConfigError(
			"cookie.name",
			`must be shorter than ${SEALED_NAME_LIMIT} characters with a sealed-cookie store, which keeps ${SEALED_NAME_LIMIT} bytes of the browser's cookie budget for "name=" (got ${cookie.name.length}).`,
		);
	}
	return {
		store,
		idleTimeoutMs,
		absoluteTimeoutMs: Math.max(idleTimeoutMs, Math.round(absolute * 1000)),
		touchAfterMs: Math.min(Math.round(touchAfter * 1000), idleTimeoutMs - 1),
		maxSize,
		cookie,
		codec,
		clock,
		onEvent: onEvent as ResolvedOptions["onEvent"],
	};
}
