// The minimal session of the floor rows (servers/<framework>/minimal-session.mjs): the least a
// server-side session with hashed tokens does on the counter route. Find the cookie, SHA-256
// its token, look the record up in a Map; the route stores a new copy with the counter plus one
// (a copy: a store shares its records and never changes one in place). No expiry, no
// validation, no response hook, no merge of parallel changes: a reference for what the counter
// route cannot cost less than, not a session library. Each server wires it into its framework
// the cheapest idiomatic way.
import { hash, randomBytes } from "node:crypto";
import { LOGIN } from "./common.mjs";

const records = new Map();
const IDLE_MS = 1_800_000;
// One-shot, as sessionkit hashes: createHash would add about 1 µs a request to the floor.
const sha256 = (token) => hash("sha256", token, "hex");

/** The session of a Cookie header: `{ key, data }`, or null without a known `sid` cookie. */
export function loadMinimal(cookieHeader) {
	const header = cookieHeader ?? "";
	const at = header.indexOf("sid=");
	if (at < 0) return null;
	const key = sha256(header.slice(at + 4, at + 47));
	const record = records.get(key);
	return record === undefined ? null : { key, data: record.data };
}

/** Stores a new login session and returns the Set-Cookie value that carries its token. */
export function loginMinimal() {
	const token = randomBytes(32).toString("base64url");
	const data = Object.fromEntries(Object.entries(LOGIN).map(([key, value]) => [key, JSON.stringify(value)]));
	records.set(sha256(token), { data, idleExpiresAt: Date.now() + IDLE_MS });
	return `sid=${token}; Path=/; HttpOnly; SameSite=Lax`;
}

export function countOf(session) {
	return Number(session.data.count ?? 0);
}

/** Stores a copy of the session's record with the counter plus one; returns the new count. */
export function incrementMinimal(session) {
	const count = countOf(session) + 1;
	records.set(session.key, { data: { ...session.data, count: String(count) }, idleExpiresAt: Date.now() + IDLE_MS });
	return count;
}
