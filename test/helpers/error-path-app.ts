/**
 * Requests against the error-path test apps of the adapter suites: `/set` stores
 * `user_id = 123` in a new session, `/get` answers the session's data as JSON, and `/admin`
 * fails for an error handler that logs the user out (`destroy()`) and answers 401, or with
 * `?status=` when given.
 */
import assert from "node:assert/strict";
import { setCookiesOf } from "./cookie-jar.js";

/** A new session cookie from `/set`, as a `Cookie` header value. */
export async function loggedIn(url: string): Promise<string> {
	const response = await fetch(`${url}/set`);
	await response.text();
	const cookie = response.headers.getSetCookie().find((line) => line.startsWith("sid="));
	assert.ok(cookie, "/set sets the session cookie");
	return cookie.split(";")[0]!;
}

/** The session's data, as `/get` answers it for `cookie`. */
export async function dataOf(url: string, cookie: string): Promise<unknown> {
	return JSON.parse(await (await fetch(`${url}/get`, { headers: { cookie } })).text());
}

/** Asserts that `response` expires the session cookie, and keeps caches from storing that. */
export function assertExpiresSession(response: Response): void {
	const sid = setCookiesOf(response).find((cookie) => cookie.name === "sid");
	assert.ok(sid, "the response sets the session cookie");
	assert.equal(sid.value, "");
	assert.equal(sid.attributes.get("max-age"), "0", "the destroyed session's cookie is expired");
	assert.equal(response.headers.get("cache-control"), "no-store");
	assert.match(response.headers.get("vary") ?? "", /\bCookie\b/);
}

/**
 * With a logged-in session: `/admin` answered with a 500 commits nothing and the session keeps
 * its data; answered with a 401, the error handler's `destroy()` is committed, so the cookie is
 * expired and the store no longer holds the session.
 */
export async function assertLogOutOnError(url: string, sessions: { count(): Promise<number> }): Promise<void> {
	const cookie = await loggedIn(url);

	const failed = await fetch(`${url}/admin?status=500`, { headers: { cookie } });
	assert.equal(failed.status, 500);
	assert.deepEqual(setCookiesOf(failed), [], "nothing is committed for a server error");
	assert.deepEqual(await dataOf(url, cookie), { user_id: 123 });

	const denied = await fetch(`${url}/admin`, { headers: { cookie } });
	assert.equal(denied.status, 401);
	assert.equal(await denied.text(), "logged out");
	assertExpiresSession(denied);
	assert.equal(await sessions.count(), 0, "the store no longer has the session");
	assert.deepEqual(await dataOf(url, cookie), {});
}

/**
 * What an error page that reads the session (to show who is logged in, say) finds: its error
 * handler answers 500 with `read: <code>`, the `code` of what `session.get("user_id")` threw
 * (a `SessionError`), the thrown value's class name otherwise, or `read: <value>` when it did
 * not throw.
 */
export function errorPageBody(read: () => unknown): string {
	try {
		return `read: ${String(read())}`;
	} catch (error) {
		const code = (error as { code?: unknown }).code;
		return `read: ${typeof code === "string" ? code : (error as Error).constructor.name}`;
	}
}

/**
 * With a logged-in session (`/set`), the store fails every call: the request cannot load its
 * session, and the app's error page, which reads it, must see the store's error (the session is
 * there, and throws it) rather than a TypeError on a missing session.
 */
export async function assertErrorPageSeesStoreError(url: string, store: { failing: string }): Promise<void> {
	const cookie = await loggedIn(url);
	store.failing = "all";
	const response = await fetch(`${url}/get`, { headers: { cookie } });
	assert.equal(response.status, 500);
	assert.equal(await response.text(), "read: SESSION_STORE");
	assert.deepEqual(setCookiesOf(response), [], "no cookie from a session that could not load");
	store.failing = "none";
}
