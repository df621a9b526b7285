/**
 * The executable form of the adapter contract: one list of behaviours, run against every
 * adapter's real framework server on port 0, with real `fetch` and a cookie jar. An adapter's
 * test file starts its framework with the demo routes and calls `adapterConformance`.
 *
 * The demo routes every app must serve (the same as the examples):
 *
 * | route | does | answers |
 * | --- | --- | --- |
 * | `GET /login` | sets `authenticated`, then renews | 200 `Logged in` |
 * | `GET /logout` | destroys the session | 200 `Logged out` |
 * | `GET /secret` | reads `authenticated` | 403 `Forbidden`, or 200 `The cake is a lie!` |
 * | `GET /set` | stores `user_id = 123` | `Succeed` |
 * | `GET /get` | reads `user_id` | `Authenticated as 123` or `Not authenticated` |
 * | `GET /clear` | clears the data | `Cleared` |
 * | `GET /flash/set` | flashes `message` = `This is a flash message` | `Succeed` |
 * | `GET /flash/get` | reads the flash once | the message, then `No flash message` |
 * | `GET /counter` | increments `visits` | `Visits: <n>` |
 * | `GET /theme` | sets its own cookie `theme=dark`, `Vary: Accept-Language`, and `theme` in the session | `Theme: dark` |
 * | `GET /throw` | sets `user_id = 666`, then throws `new Error("boom")` | 500 |
 * | `GET /stream` | stores `user_id = 123`, then streams `Streaming the body` in chunks | 200 |
 *
 * Errors go to the framework's own error handler, which answers 500 with the body
 * `Error: <code>`: the `code` of a `SessionError`, `INTERNAL` for anything else.
 */
import assert from "node:assert/strict";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { createSessions } from "sessionkit";
import type { AppSessionData, SessionManager, SessionOptions } from "sessionkit";
import { CookieJar, readReply } from "./helpers/cookie-jar.js";
import type { Reply } from "./helpers/cookie-jar.js";
import { testClock } from "./helpers/clock.js";
import { faultyStore, STORE_KINDS, storeOf } from "./helpers/test-stores.js";
import type { StoreKind } from "./helpers/test-stores.js";

/** A running server: its base URL (no trailing slash) and how to stop it. */
export interface AdapterServer {
	url: string;
	close(): Promise<void>;
}

/** How the suite wants the app configured. */
export interface StartOptions {
	/** Configure the framework to trust `X-Forwarded-Proto` (as behind a reverse proxy). */
	trustProxy: boolean;
}

/** Starts the framework's real server on 127.0.0.1, port 0, with the demo routes and `sessions`. */
export type StartServer = (sessions: SessionManager<AppSessionData>, options: StartOptions) => Promise<AdapterServer>;

/** Listens on 127.0.0.1, port 0, and stops with every connection closed: for adapters on node:http servers. */
export async function listen(server: Server): Promise<AdapterServer> {
	await new Promise<void>((resolve, reject) => {
		server.once("error", reject);
		server.listen(0, "127.0.0.1", () => resolve());
	});
	const { port } = server.address() as AddressInfo;
	return {
		url: `http://127.0.0.1:${port}`,
		close: () =>
			new Promise<void>((resolve, reject) => {
				server.close((error) => (error ? reject(error) : resolve()));
				server.closeAllConnections();
			}),
	};
}

class Client {
	constructor(
		readonly baseURL: string,
		readonly cookieName: string,
		readonly jar = new CookieJar(),
	) {}

	/** GETs `path` with the jar's cookies (unless `headers` has its own `Cookie`) and feeds the jar. */
	async get(path: string, headers: Record<string, string> = {}): Promise<Reply> {
		const sent = new Headers(headers);
		const cookie = this.jar.header();
		if (cookie !== undefined && !sent.has("cookie")) sent.set("cookie", cookie);
		const response = await fetch(this.baseURL + path, { headers: sent, redirect: "manual" });
		const reply = await readReply(response, this.cookieName);
		this.jar.update(response);
		const sessionCookies = reply.cookies.filter((c) => c.name === this.cookieName);
		assert.ok(sessionCookies.length <= 1, `at most one session Set-Cookie per response, got ${sessionCookies.length}`);
		return reply;
	}

	/** The session token the jar holds now. */
	get token(): string | undefined {
		return this.jar.get(this.cookieName);
	}

	/** Another client that starts with this one's cookies. */
	fork(): Client {
		return new Client(this.baseURL, this.cookieName, this.jar.clone());
	}
}

interface Setup {
	options?: SessionOptions;
	trustProxy?: boolean;
}

/**
 * Runs the whole list of adapter behaviours against `start`'s server, once on each of
 * {@link STORE_KINDS}: with a store that waits (file), the load and the commit finish after the
 * framework has moved on. Every test starts its own server, session manager and store, so
 * tests are independent.
 */
export function adapterConformance(name: string, start: StartServer): void {
	for (const kind of STORE_KINDS) suite(name, kind, start);
}

function suite(name: string, kind: StoreKind, start: StartServer): void {
	async function serve(t: TestContext, setup: Setup = {}): Promise<Client> {
		const sessions = createSessions<AppSessionData>({ store: await storeOf(kind, t), ...setup.options });
		const server = await start(sessions, { trustProxy: setup.trustProxy ?? false });
		t.after(async () => {
			await server.close();
			await sessions.close();
		});
		return new Client(server.url, sessions.cookieName);
	}

	async function loggedIn(client: Client): Promise<void> {
		const reply = await client.get("/login");
		assert.equal(reply.status, 200);
		assert.ok(reply.session, "login sets the session cookie");
	}

	describe(`adapter conformance: ${name}, ${kind} store`, () => {
		it("sets no cookie on a request that does not touch the session", async (t) => {
			const client = await serve(t);
			const get = await client.get("/get");
			assert.equal(get.status, 200);
			assert.equal(get.body, "Not authenticated");
			assert.deepEqual(get.cookies, []);
			const secret = await client.get("/secret");
			assert.equal(secret.status, 403);
			assert.equal(secret.body, "Forbidden");
			assert.deepEqual(secret.cookies, []);
			const flash = await client.get("/flash/get");
			assert.equal(flash.body, "No flash message");
			assert.deepEqual(flash.cookies, []);
		});

		it("does not count a request that never touches the session as activity", async (t) => {
			// The stores check deadlines on their own clock too: start this one at the real time.
			const clock = testClock(Date.now());
			const client = await serve(t, { options: { clock, idleTimeout: 300, touchAfter: 60, cookie: { persist: true } } });
			await client.get("/set");
			clock.advance(200);
			const untouched = await client.get("/no-such-route");
			assert.equal(untouched.status, 404);
			assert.deepEqual(untouched.cookies, [], "no refreshed cookie: the idle deadline did not move");
			clock.advance(200);
			assert.equal((await client.get("/get")).body, "Not authenticated", "the session expired 300 s after its last use");
		});

		it("reads in the next request what a request stored", async (t) => {
			const client = await serve(t);
			const set = await client.get("/set");
			assert.equal(set.status, 200);
			assert.equal(set.body, "Succeed");
			assert.ok(set.session, "a new session that was modified sets its cookie");
			assert.match(set.session.value, /^[A-Za-z0-9_-]{43}$/);
			const get = await client.get("/get");
			assert.equal(get.body, "Authenticated as 123");
		});

		it("sets no cookie when a stored session is only read", async (t) => {
			const client = await serve(t);
			await client.get("/set");
			const get = await client.get("/get");
			assert.equal(get.body, "Authenticated as 123");
			assert.deepEqual(get.cookies, []);
			assert.equal((await client.get("/secret")).cookies.length, 0);
		});

		it("gives the session a new cookie on renew, and the old cookie stops working", async (t) => {
			const client = await serve(t);
			await client.get("/set");
			const before = client.fork();
			const login = await client.get("/login");
			assert.equal(login.body, "Logged in");
			assert.ok(login.session);
			assert.notEqual(login.session.value, before.token);
			const secret = await client.get("/secret");
			assert.equal(secret.status, 200);
			assert.equal(secret.body, "The cake is a lie!");
			assert.equal((await client.get("/get")).body, "Authenticated as 123", "renew keeps the data");
			assert.equal((await before.get("/secret")).status, 403, "the old cookie no longer authenticates");
			assert.equal((await before.get("/get")).body, "Not authenticated");
		});

		it("keeps a flash message across renew", async (t) => {
			const client = await serve(t);
			await client.get("/flash/set");
			await client.get("/login");
			assert.equal((await client.get("/flash/get")).body, "This is a flash message");
		});

		it("expires the cookie on logout and forgets the session", async (t) => {
			const client = await serve(t);
			await loggedIn(client);
			const stolen = client.fork();
			const logout = await client.get("/logout");
			assert.equal(logout.status, 200);
			assert.equal(logout.body, "Logged out");
			assert.ok(logout.session, "logout sends a Set-Cookie");
			assert.equal(logout.session.value, "");
			assert.equal(logout.session.attributes.get("max-age"), "0");
			assert.equal(client.token, undefined, "the browser forgets the cookie");
			assert.equal((await client.get("/secret")).status, 403);
			assert.equal((await stolen.get("/secret")).status, 403, "a copy of the old cookie is dead too");
		});

		it("shows a flash message once", async (t) => {
			const client = await serve(t);
			const set = await client.get("/flash/set");
			assert.equal(set.body, "Succeed");
			assert.ok(set.session);
			assert.equal((await client.get("/flash/get")).body, "This is a flash message");
			assert.equal((await client.get("/flash/get")).body, "No flash message");
		});

		it("clears the data of a session", async (t) => {
			const client = await serve(t);
			await client.get("/set");
			await loggedIn(client);
			assert.equal((await client.get("/clear")).body, "Cleared");
			assert.equal((await client.get("/get")).body, "Not authenticated");
			assert.equal((await client.get("/secret")).status, 403);
		});

		it("sends HttpOnly, SameSite=Lax, Path=/ and no Secure over plain HTTP", async (t) => {
			const client = await serve(t);
			const { session } = await client.get("/set");
			assert.ok(session);
			assert.equal(session.name, "sid");
			assert.equal(session.attributes.get("httponly"), true);
			assert.equal(session.attributes.get("samesite"), "Lax");
			assert.equal(session.attributes.get("path"), "/");
			assert.equal(session.attributes.has("secure"), false);
			assert.equal(session.attributes.has("max-age"), false, "a browser-session cookie unless persist is set");
			assert.equal(session.attributes.has("domain"), false);
		});

		it("sends Secure when the cookie is configured secure: true", async (t) => {
			const client = await serve(t, { options: { cookie: { secure: true } } });
			const { session } = await client.get("/set");
			assert.equal(session?.attributes.get("secure"), true);
		});

		it("sends Secure behind a trusted proxy that says X-Forwarded-Proto: https", async (t) => {
			const client = await serve(t, { trustProxy: true });
			const proxied = await client.get("/set", { "X-Forwarded-Proto": "https" });
			assert.equal(proxied.session?.attributes.get("secure"), true);
			const plain = await client.fork().get("/login", { "X-Forwarded-Proto": "http" });
			assert.equal(plain.session?.attributes.has("secure"), false);
		});

		it("ignores X-Forwarded-Proto when the proxy is not trusted", async (t) => {
			const client = await serve(t, { trustProxy: false });
			const { session } = await client.get("/set", { "X-Forwarded-Proto": "https" });
			assert.ok(session);
			assert.equal(session.attributes.has("secure"), false);
		});

		it("marks a response that sets the cookie Cache-Control: no-store and Vary: Cookie", async (t) => {
			const client = await serve(t);
			for (const path of ["/set", "/login", "/logout"]) {
				const reply = await client.get(path);
				assert.ok(reply.session, `${path} sets the cookie`);
				assert.equal(reply.headers.get("cache-control"), "no-store", path);
				assert.match(reply.headers.get("vary") ?? "", /(^|,)\s*cookie\s*(,|$)/i, path);
			}
		});

		it("keeps the Set-Cookie and Vary headers the handler set", async (t) => {
			const client = await serve(t);
			const reply = await client.get("/theme");
			assert.equal(reply.body, "Theme: dark");
			assert.ok(reply.session, "the session cookie is added");
			assert.equal(reply.cookies.find((c) => c.name === "theme")?.value, "dark", "the handler's cookie is kept");
			const vary = (reply.headers.get("vary") ?? "").toLowerCase().split(",").map((v) => v.trim());
			assert.ok(vary.includes("accept-language"), `Vary keeps the handler's value: ${vary.join(", ")}`);
			assert.ok(vary.includes("cookie"), `Vary adds Cookie: ${vary.join(", ")}`);
		});

		it("answers 500 through the framework's error handler when the store cannot load, and leaks no session", async (t) => {
			const store = faultyStore();
			const client = await serve(t, { options: { store } });
			await loggedIn(client);
			store.failing = "all";
			const secret = await client.get("/secret");
			assert.equal(secret.status, 500);
			assert.equal(secret.body, "Error: SESSION_STORE", "the typed error reached the app's error handler");
			assert.deepEqual(secret.cookies, [], "no cookie: neither a new session nor an expired one");
			store.failing = "none";
			const again = await client.get("/secret");
			assert.equal(again.body, "The cake is a lie!", "the session survived the outage");
		});

		it("answers 500 through the framework's error handler when the store cannot save, and keeps nothing", async (t) => {
			const store = faultyStore();
			const client = await serve(t, { options: { store } });
			store.failing = "writes";
			const set = await client.get("/set");
			assert.equal(set.status, 500);
			assert.equal(set.body, "Error: SESSION_STORE");
			assert.deepEqual(set.cookies, [], "no cookie for a session that was never stored");
			assert.equal(client.token, undefined);

			store.failing = "none";
			await client.get("/set");
			store.failing = "writes";
			const counter = await client.get("/counter");
			assert.equal(counter.status, 500);
			assert.equal(counter.body, "Error: SESSION_STORE");
			assert.deepEqual(counter.cookies, []);
			const renew = await client.get("/login");
			assert.equal(renew.status, 500);
			assert.deepEqual(renew.cookies, [], "a failed renew hands out no new token");
			store.failing = "none";
			assert.equal((await client.get("/counter")).body, "Visits: 1", "the failed increment was not applied");
			assert.equal((await client.get("/secret")).status, 403, "the failed login was not applied");
		});

		it("does not keep the changes of a handler that throws", async (t) => {
			const client = await serve(t);
			const fresh = await client.get("/throw");
			assert.equal(fresh.status, 500);
			assert.equal(fresh.body, "Error: INTERNAL");
			assert.deepEqual(fresh.cookies, [], "a new session changed by a failing handler is not stored");

			await client.get("/set");
			const thrown = await client.get("/throw");
			assert.equal(thrown.status, 500);
			assert.deepEqual(thrown.cookies, []);
			assert.equal((await client.get("/get")).body, "Authenticated as 123", "the change before the throw was dropped");
		});

		it("commits the session of a handler that streams its body", async (t) => {
			const client = await serve(t);
			const reply = await client.get("/stream");
			assert.equal(reply.status, 200);
			assert.equal(reply.body, "Streaming the body");
			assert.ok(reply.session, "the cookie goes out with the streamed response's headers");
			assert.equal(reply.headers.get("cache-control"), "no-store");
			assert.equal((await client.get("/get")).body, "Authenticated as 123");
		});

		it("adds up ten parallel increments on one session", async (t) => {
			const client = await serve(t);
			await client.get("/set");
			const replies = await Promise.all(Array.from({ length: 10 }, () => client.get("/counter")));
			for (const reply of replies) {
				assert.equal(reply.status, 200);
				assert.match(reply.body, /^Visits: \d+$/);
				assert.deepEqual(reply.cookies, [], "an existing session keeps its cookie");
			}
			assert.equal((await client.get("/counter")).body, "Visits: 11");
			assert.equal((await client.get("/get")).body, "Authenticated as 123", "the other keys are intact");
		});

		it("treats a tampered, malformed or duplicated cookie as no session", async (t) => {
			const client = await serve(t);
			await loggedIn(client);
			const token = client.token!;
			const tampered = (token[0] === "A" ? "B" : "A") + token.slice(1);
			const malformed = ["x", "../../../etc/passwd", "%E0%A4%A", `${token}=`, token.slice(1), "A".repeat(4000)];
			for (const value of [tampered, ...malformed]) {
				const reply = await client.get("/secret", { Cookie: `sid=${value}` });
				assert.equal(reply.status, 403, `sid=${value.slice(0, 50)}`);
				assert.deepEqual(reply.cookies, [], `no cookie set for sid=${value.slice(0, 50)}`);
			}
			for (const header of [`sid=${token}; sid=${token}`, `sid=${token}; sid=${tampered}`, `sid=${tampered}; sid=${token}`]) {
				const reply = await client.get("/secret", { Cookie: header });
				assert.equal(reply.status, 403, header.replaceAll(token, "<token>"));
			}
			// A client-chosen token is never adopted (no fixation): storing data gets a fresh token.
			const adopted = await client.fork().get("/set", { Cookie: `sid=${tampered}` });
			assert.ok(adopted.session);
			assert.notEqual(adopted.session.value, tampered);
			assert.notEqual(adopted.session.value, token);
			assert.equal((await client.get("/secret")).status, 200, "the real session is untouched");
		});

		it("keeps other cookies of the request out of the session", async (t) => {
			const client = await serve(t);
			await client.get("/set");
			const reply = await client.get("/get", { Cookie: `theme=dark; sid=${client.token}; other=1` });
			assert.equal(reply.body, "Authenticated as 123");
		});
	});
}
