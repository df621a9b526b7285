import { parse } from "cookie";
import type { ResolvedOptions } from "./options.js";

export type CookieRead =
	| { kind: "absent" }
	| { kind: "value"; value: string }
	| { kind: "rejected"; reason: "oversized" | "duplicated" };

/**
 * The session cookie's value from a `Cookie` header. Two cookies of the same name (a
 * cookie-tossing attack from a sibling subdomain, or a stale path) mean "no session": we cannot
 * tell which one the browser meant.
 */
export function readSessionCookie(header: string | null | undefined, name: string, maxBytes: number): CookieRead {
	if (!header) return { kind: "absent" };
	const first = findCookie(header, name, 0);
	if (first < 0) return { kind: "absent" };
	if (findCookie(header, name, first + name.length + 1) >= 0) return { kind: "rejected", reason: "duplicated" };
	// Only the session cookie's own pair is parsed: a browser may send dozens of other cookies.
	// No percent-decoding: a token has one spelling, so logs and filters see what the store sees.
	const end = header.indexOf(";", first);
	const value = parse(end < 0 ? header.slice(first) : header.slice(first, end), { decode: keepAsSent })[name];
	if (value === undefined || value === "") return { kind: "absent" };
	if (value.length > maxBytes) return { kind: "rejected", reason: "oversized" };
	return { kind: "value", value };
}

function keepAsSent(value: string): string {
	return value;
}

/** Index of `name=` at a cookie boundary in `header`, from `from`; -1 if none. */
function findCookie(header: string, name: string, from: number): number {
	let at = header.indexOf(name, from);
	while (at >= 0) {
		// Spaces may stand before the "=", not another word: "sid x=1" is a cookie of its own.
		let after = at + name.length;
		while (isSpace(header.charCodeAt(after))) after++;
		let before = at - 1;
		while (before >= 0 && (header.charCodeAt(before) === 32 || header.charCodeAt(before) === 9)) before--;
		if (header.charCodeAt(after) === 61 /* = */ && (before < 0 || header.charCodeAt(before) === 59 /* ; */)) return at;
		at = header.indexOf(name, at + 1);
	}
	return -1;
}

function isSpace(code: number): boolean {
	return code === 32 || code === 9;
}

const SAME_SITE = { lax: "; SameSite=Lax", strict: "; SameSite=Strict", none: "; SameSite=None" } as const;

/**
 * Set-Cookie attributes, in the order the `cookie` package writes them. Written by hand because
 * every part was validated by `createSessions` and every value is ours (a token or a sealed
 * value, both base64url): the package's per-call checks cost more than the rest of a
 * sealed-cookie commit.
 */
function domainAndPath(cookie: ResolvedOptions["cookie"]): string {
	return cookie.domain ? `; Domain=${cookie.domain}; Path=${cookie.path}` : `; Path=${cookie.path}`;
}

/** The attributes after `Expires`. */
function flags(cookie: ResolvedOptions["cookie"], secure: boolean): string {
	let out = "";
	if (cookie.httpOnly) out += "; HttpOnly";
	if (secure) out += "; Secure";
	if (cookie.partitioned) out += "; Partitioned";
	return out + SAME_SITE[cookie.sameSite as keyof typeof SAME_SITE];
}

/** The `Set-Cookie` value that stores `value`; `maxAge` in seconds, or `undefined` for a browser-session cookie. */
export function serializeSessionCookie(
	cookie: ResolvedOptions["cookie"],
	value: string,
	secure: boolean,
	maxAge: number | undefined,
): string {
	const head = maxAge === undefined ? `${cookie.name}=${value}` : `${cookie.name}=${value}; Max-Age=${maxAge}`;
	return head + domainAndPath(cookie) + flags(cookie, secure);
}

/** The `Set-Cookie` value that makes the browser forget the session cookie. */
export function serializeExpiredCookie(cookie: ResolvedOptions["cookie"], secure: boolean): string {
	return `${cookie.name}=; Max-Age=0${domainAndPath(cookie)}; Expires=${EPOCH}${flags(cookie, secure)}`;
}

const EPOCH = new Date(0).toUTCString();
