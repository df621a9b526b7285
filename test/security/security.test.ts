/**
 * The security model, end to end: a real node:http server on 127.0.0.1 (port 0) with
 * `withSessions`/`getSession`, real `fetch`, and a memory store wrapped to count (or record)
 * every call; manager-level tests where the property is clearer there. What
 * test/adapter-conformance.ts and test/core/* already check is not repeated here.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import { createServer as createHttpsServer, request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import type { TestContext } from "node:test";
import { inspect } from "node:util";
import { createSessions, defaultCodec, SessionCodecError, SessionConfigError, SessionTooLargeError, SessionUsageError } from "sessionkit";
import type { CookieOptions, Session, SessionEvent, SessionManager, SessionOptions, SessionStore, StoredRecord } from "sessionkit";
import { getSession, withSessions } from "sessionkit/node";
import { memoryStore } from "sessionkit/stores/memory";
import type { MemoryStore } from "sessionkit/stores/memory";
import { listen } from "../adapter-conformance.js";
import { testClock } from "../helpers/clock.js";
import type { TestClock } from "../helpers/clock.js";
import { readReply } from "../helpers/cookie-jar.js";
import type { Reply } from "../helpers/cookie-jar.js";
import { countingStore } from "../helpers/counting-store.js";
import { cookieOf, request } from "../helpers/round.js";

type Data = Record<string, unknown>;

const TOKEN = /^[A-Za-z0-9_-]{43}$/;

function sha256Hex(text: string): string {
	return createHash("sha256").update(text).digest("hex");
}

/** Every method call a store received, with its arguments, in order. */
interface Recorded {
	method: string;
	args: unknown[];
}

/** Wraps a store and records each call; non-function properties (`synchronous`) pass through. */
function recordingStore(inner: SessionStore): { store: SessionStore; log: Recorded[] } {
	const log: Recorded[] = [];
	const store = new Proxy(inner, {
		get(target, property, receiver) {
			const value = Reflect.get(target, property, receiver);
			if (typeof value !== "function") return value;
			return (...args: unknown[]) => {
				log.push({ method: String(property), args: structuredClone(args) });
				return value.apply(target, args);
			};
		},
	});
	return { store, log };
}

/** The demo app of these tests. Every route but `/untouched` uses the session. */
function routes(req: IncomingMessage, res: ServerResponse): void {
	const url = new URL(req.url ?? "/", "http://localhost");
	const send = (status: number, body: string) => {
		res.statusCode = status;
		res.setHeader("Content-Type", "text/plain; charset=utf-8");
		res.end(body);
	};
	if (url.pathname === "/untouched") return send(200, "no session here");
	const session = getSession<Data>(req);
	switch (url.pathname) {
		case "/login":
			session.set("user", url.searchParams.get("user") ?? "alice");
			session.subject = url.searchParams.get("user") ?? "alice";
			session.renew();
			return send(200, "Logged in");
		case "/whoami":
			return send(200, String(session.get("user") ?? "anonymous"));
		case "/set":
			session.set("note", url.searchParams.get("v") ?? "note");
			return send(200, "ok");
		case "/busy":
			session.increment("visits");
			session.flash("notice", "hello");
			return send(200, "ok");
		case "/id":
			return send(200, session.id ?? "none");
		case "/big":
			session.set("blob", "x".repeat(Number(url.searchParams.get("n") ?? "1000")));
			if (url.searchParams.has("renew")) session.renew();
			return send(200, "stored");
		case "/logout":
			session.destroy();
			return send(200, "Logged out");
		case "/writehead-cache":
			session.set("note", "cached?");
			res.writeHead(200, { "Cache-Control": "public, max-age=3600", "Content-Type": "text/plain; charset=utf-8" });
			res.end("ok");
			return;
		case "/writehead-cookie":
			session.set("note", "own cookie");
			res.writeHead(200, { "Set-Cookie": "theme=dark; Path=/" });
			res.end("ok");
			return;
		default:
			return send(404, "Not Found");
	}
}

interface App {
	url: string;
	sessions: SessionManager<Data>;
	/** The real memory store behind the counting wrapper. */
	inner: MemoryStore;
	calls: Record<string, number>;
	/** Forgets the store calls and the events seen so far. */
	reset(): void;
	events: SessionEvent[];
	errors: unknown[];
	clock: TestClock;
	fetch(path: string, init?: { cookie?: string; headers?: Record<string, string>; method?: string; body?: string }): Promise<Reply>;
}

function toReply(response: Response): Promise<Reply> {
	return readReply(response, "sid");
}

/**
 * Starts the app on a real server. The store's own clock stands still, as a backend whose
 * reaping lags would: expiry seen here is the manager's check, not the store's.
 */
async function serve(t: TestContext, options: Omit<SessionOptions, "store" | "clock" | "onEvent"> = {}, node: { trustProxy?: boolean } = {}): Promise<App> {
	const clock = testClock();
	const inner = memoryStore({ sweepInterval: 0, clock: testClock() });
	const counted = countingStore(inner);
	const events: SessionEvent[] = [];
	const errors: unknown[] = [];
	const sessions = createSessions<Data>({ ...options, store: counted.store, clock, onEvent: (e) => events.push(e) });
	const handler = withSessions(sessions, routes, {
		trustProxy: node.trustProxy ?? false,
		onError: (error, _req, res) => {
			errors.push(error);
			res.statusCode = 500;
			res.end(`Error: ${(error as { code?: string }).code ?? "INTERNAL"}`);
		},
	});
	const server = await listen(createServer(handler));
	t.after(async () => {
		await server.close();
		await sessions.close();
	});
	return {
		url: server.url,
		sessions,
		inner,
		calls: counted.calls,
		reset() {
			counted.reset();
			events.length = 0;
		},
		events,
		errors,
		clock,
		async fetch(path, init = {}) {
			const headers = new Headers(init.headers);
			if (init.cookie !== undefined) headers.set("cookie", init.cookie);
			const response = await fetch(server.url + path, { method: init.method ?? "GET", headers, body: init.body, redirect: "manual" });
			return toReply(response);
		},
	};
}

/** Logs in as `user` and returns the session token the browser got. */
async function login(app: App, user = "alice", cookie?: string): Promise<string> {
	const reply = await app.fetch(`/login?user=${user}`, { cookie });
	assert.equal(reply.status, 200);
	assert.ok(reply.session, "login sets the session cookie");
	assert.match(reply.session.value, TOKEN);
	return reply.session.value;
}

/** A different, still well-formed token: one bit of the decoded bytes flipped. */
function flipDecodedBit(token: string): string {
	const bytes = Buffer.from(token, "base64url");
	bytes[0]! ^= 0x01;
	return bytes.toString("base64url");
}

/** One bit of one character flipped so that it leaves the base64url alphabet (and stays a legal header byte). */
function flipCharBitOut(token: string): string {
	for (let at = 0; at < token.length; at++) {
		for (let bit = 1; bit < 128; bit <<= 1) {
			const code = token.charCodeAt(at) ^ bit;
			const char = String.fromCharCode(code);
			if (code > 0x20 && code < 0x7f && !/[A-Za-z0-9_\-;,"\\%=]/.test(char)) return token.slice(0, at) + char + token.slice(at + 1);
		}
	}
	throw new Error("no bit flip leaves the alphabet");
}

describe("session fixation", () => {
	it("never adopts a well-formed token the client chose: one lookup, then no cookie or a fresh one", async (t) => {
		const app = await serve(t);
		const chosen = "Attacker0Chosen0Token0Well0Formed0Value0xyz";
		assert.match(chosen, TOKEN);

		const read = await app.fetch("/whoami", { cookie: `sid=${chosen}` });
		assert.equal(read.body, "anonymous");
		assert.equal(read.session, undefined, "a read-only request sets no cookie");
		assert.deepEqual(app.calls, { get: 1 });
		assert.deepEqual(app.events, [{ type: "session-unknown", id: sha256Hex(chosen) }]);

		const write = await app.fetch("/set?v=victim-data", { cookie: `sid=${chosen}` });
		assert.ok(write.session);
		assert.match(write.session.value, TOKEN);
		assert.notEqual(write.session.value, chosen, "the session gets a token the server made");
		assert.equal(app.inner.get(sha256Hex(chosen)), null, "nothing is stored under the chosen token");
		assert.equal((await app.fetch("/whoami", { cookie: `sid=${chosen}` })).body, "anonymous");
	});

	it("retires a token planted before login: after login and renew it loads nothing", async (t) => {
		const app = await serve(t);
		// The attacker got a real session of their own and planted its token in the victim's browser.
		const planted = (await app.fetch("/set?v=attacker")).session!.value;
		const plantedKey = sha256Hex(planted);
		assert.ok(app.inner.get(plantedKey));

		const victim = await login(app, "victim", `sid=${planted}`);
		assert.notEqual(victim, planted);
		assert.equal(app.inner.get(plantedKey), null, "the pre-login record is gone from the store");

		const attacker = await app.fetch("/whoami", { cookie: `sid=${planted}` });
		assert.equal(attacker.body, "anonymous");
		assert.equal(attacker.session, undefined);
		assert.equal((await app.fetch("/whoami", { cookie: `sid=${victim}` })).body, "victim");
		const { session } = await request(app.sessions, `sid=${planted}`);
		assert.equal(session.isNew, true);
		assert.equal(session.get("user"), undefined);
	});
});

describe("tampered and malformed cookies", () => {
	it("are no session, cost zero store calls, and are reported without their value", async (t) => {
		const app = await serve(t);
		const token = await login(app);
		const cases: Array<{ name: string; header: string; reason: "malformed" | "oversized" | "duplicated" | null }> = [
			{ name: "a bit flipped out of the alphabet", header: `sid=${flipCharBitOut(token)}`, reason: "malformed" },
			{ name: "truncated", header: `sid=${token.slice(0, 42)}`, reason: "malformed" },
			{ name: "overlong by one character", header: `sid=${token}A`, reason: "malformed" },
			{ name: "padded", header: `sid=${token}=`, reason: "malformed" },
			{ name: "standard base64 characters", header: `sid=${token.slice(0, 41)}+/`, reason: "malformed" },
			{ name: "a dot", header: `sid=${token.slice(0, 42)}.`, reason: "malformed" },
			{ name: "quoted", header: `sid="${token}"`, reason: "malformed" },
			{ name: "the name twice, the real token both times", header: `sid=${token}; sid=${token}`, reason: "duplicated" },
			{ name: "the name twice, the real token second", header: `sid=${"B".repeat(43)}; theme=dark; sid=${token}`, reason: "duplicated" },
			{ name: "just over the cookie size limit", header: `sid=${"A".repeat(65)}`, reason: "oversized" },
			{ name: "8 KB", header: `sid=${"A".repeat(8192)}`, reason: "oversized" },
			{ name: "percent-encoded control characters", header: "sid=%00%0D%0A%3B%20Domain%3Devil.example", reason: "malformed" },
			{ name: "a broken percent escape", header: "sid=%E0%A4%A", reason: "malformed" },
			{ name: "a bogus percent escape", header: `sid=%ZZ${token.slice(3)}`, reason: "malformed" },
			{ name: "empty", header: "sid=", reason: null },
			{ name: "empty, among other cookies", header: "a=1; sid=; b=2", reason: null },
		];
		for (const { name, header, reason } of cases) {
			app.reset();
			const reply = await app.fetch("/whoami", { cookie: header });
			assert.equal(reply.status, 200, name);
			assert.equal(reply.body, "anonymous", name);
			assert.deepEqual(reply.cookies, [], `${name}: no cookie set`);
			assert.deepEqual(app.calls, {}, `${name}: no store call`);
			assert.deepEqual(app.events, reason === null ? [] : [{ type: "cookie-rejected", reason }], name);
		}
		app.reset();
		assert.equal((await app.fetch("/whoami", { cookie: `sid=${token}` })).body, "alice", "the real session is intact");
	});

	it("a bit flipped inside the decoded token gives an unknown token: one lookup, never the real session", async (t) => {
		const app = await serve(t);
		const token = await login(app);
		const flipped = flipDecodedBit(token);
		assert.match(flipped, TOKEN);
		assert.notEqual(flipped, token);
		app.reset();
		const reply = await app.fetch("/whoami", { cookie: `sid=${flipped}` });
		assert.equal(reply.body, "anonymous");
		assert.deepEqual(reply.cookies, []);
		assert.deepEqual(app.calls, { get: 1 });
		assert.deepEqual(app.events, [{ type: "session-unknown", id: sha256Hex(flipped) }]);
	});
});

describe("the token stays in the cookie", () => {
	it("the store sees only sha256(token): no key, record or argument holds a token", async (t) => {
		const inner = memoryStore({ sweepInterval: 0 });
		const recorded = recordingStore(inner);
		const sessions = createSessions<Data>({ store: recorded.store });
		const server = await listen(createServer(withSessions(sessions, routes)));
		t.after(async () => {
			await server.close();
			await sessions.close();
		});
		const get = async (path: string, token?: string) => toReply(await fetch(server.url + path, { headers: token ? { cookie: `sid=${token}` } : {} }));

		const first = (await get("/set?v=before-login")).session!.value;
		const loginReply = await get("/login?user=alice", first);
		const token = loginReply.session!.value;
		await get("/busy", token);
		const id = (await get("/id", token)).body;

		const key = sha256Hex(token);
		assert.equal(id, key, "session.id is the store key: the SHA-256 of the token, in hex");
		assert.match(key, /^[0-9a-f]{64}$/);
		assert.notEqual(key, token);
		const listed = inner.listBySubject!("alice");
		assert.deepEqual(listed.map((s) => s.key), [key], "the subject index holds the hash only");
		const record = inner.get(key);
		assert.ok(record);
		const stored = inspect({ listed, record }, { depth: 10 });
		for (const secret of [token, first]) {
			assert.ok(!stored.includes(secret), "no stored value holds a token");
			assert.ok(!inspect(recorded.log, { depth: 10 }).includes(secret), "no store call was passed a token");
		}
		for (const { method, args } of recorded.log) {
			assert.ok(typeof args[0] !== "string" || /^[0-9a-f]{64}$/.test(args[0]) || method === "listBySubject", `${method} was called with a key that is not a hash`);
		}
		assert.ok(recorded.log.some((call) => call.method === "set" && call.args[0] === key), "the renewed session was written under the hash");
	});

	it("events never carry a token, whatever happens to the session", async (t) => {
		const app = await serve(t, { idleTimeout: 600, maxSize: 256 });
		const tokens: string[] = [];
		tokens.push((await app.fetch("/set?v=x")).session!.value);
		tokens.push(await login(app, "alice", `sid=${tokens[0]}`));
		await app.fetch("/busy", { cookie: `sid=${tokens[1]}` });
		await app.fetch("/whoami", { cookie: `sid=${tokens[0]}` }); // renewed away: unknown
		await app.fetch("/whoami", { cookie: `sid=${tokens[1]}x` }); // malformed
		await app.fetch("/big?n=1000", { cookie: `sid=${tokens[1]}` }); // too large
		tokens.push(await login(app, "bob"));
		app.clock.advance(601);
		await app.fetch("/whoami", { cookie: `sid=${tokens[2]}` }); // expired
		tokens.push(await login(app, "carol"));
		await app.fetch("/logout", { cookie: `sid=${tokens[3]}` });
		const types = new Set(app.events.map((e) => e.type));
		for (const type of ["session-created", "session-renewed", "session-unknown", "cookie-rejected", "session-expired", "session-destroyed"]) {
			assert.ok(types.has(type as SessionEvent["type"]), `the flow produced a ${type} event`);
		}
		const seen = inspect(app.events, { depth: 10 }) + JSON.stringify(app.events);
		for (const token of tokens) assert.ok(!seen.includes(token), "no event holds a token");
		assert.equal(app.errors.length, 1, "only the oversized commit failed");
		assert.ok(!inspect(app.errors[0]).includes(tokens[1]!), "nor does the error");
	});

	it("is never read from the query string, the body or another header", async (t) => {
		const app = await serve(t);
		const token = await login(app);
		app.reset();
		const attempts = [
			app.fetch(`/whoami?sid=${token}`),
			app.fetch(`/whoami?session=${token}&token=${token}`),
			app.fetch("/whoami", { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" }, body: `sid=${token}` }),
			app.fetch("/whoami", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ sid: token }) }),
			app.fetch("/whoami", { headers: { Authorization: `Bearer ${token}`, "X-Session-Id": token, "Set-Cookie": `sid=${token}` } }),
		];
		for (const reply of await Promise.all(attempts)) {
			assert.equal(reply.body, "anonymous");
			assert.deepEqual(reply.cookies, []);
		}
		assert.deepEqual(app.calls, {}, "without a Cookie header no store call is made");
	});
});

describe("prototype pollution", () => {
	const FORBIDDEN = ["__proto__", "constructor", "prototype"];

	it("set, increment and flash refuse __proto__, constructor and prototype; reads of them find nothing", async () => {
		const sessions = createSessions<Data>({ store: memoryStore({ sweepInterval: 0 }) });
		const { setCookie } = await request(sessions, undefined, (s) => {
			for (const key of FORBIDDEN) {
				assert.throws(() => s.set(key, { isAdmin: true }), SessionUsageError, `set ${key}`);
				assert.throws(() => s.increment(key), SessionUsageError, `increment ${key}`);
				assert.throws(() => s.flash(key, "x"), SessionUsageError, `flash ${key}`);
				assert.equal(s.get(key), undefined, `get ${key} never reaches Object.prototype`);
				assert.equal(s.has(key), false);
				assert.equal(s.peekFlash(key), undefined);
				assert.equal(s.hasFlash(key), false);
			}
			s.set("safe", 1);
		});
		const { session } = await request(sessions, cookieOf(setCookie));
		assert.deepEqual(session.all(), { safe: 1 });
		assert.equal(({} as Data).isAdmin, undefined);
	});

	it("a stored record with __proto__, constructor and prototype keys loads without polluting anything", async () => {
		const clock = testClock();
		const store = memoryStore({ sweepInterval: 0, clock });
		const sessions = createSessions<Data>({ store, clock });
		const token = "Stored0Record0With0Hostile0Keys0aaaaaaaaaaa";
		const now = clock();
		// As a store that JSON.parses its rows would return them: own keys named __proto__.
		const record: StoredRecord = {
			data: JSON.parse('{"__proto__":"{\\"isAdmin\\":true}","constructor":"{\\"prototype\\":{\\"isAdmin\\":true}}","prototype":"1","ok":"1","profile":"{\\"__proto__\\":{\\"isAdmin\\":true}}"}'),
			flash: JSON.parse('{"__proto__":"{\\"isAdmin\\":true}","notice":"\\"hi\\""}'),
			createdAt: now,
			idleExpiresAt: now + 600_000,
			absoluteExpiresAt: now + 3_600_000,
			subject: null,
		};
		store.set(sha256Hex(token), record, now + 600_000);

		const first = await request(sessions, `sid=${token}`, (s) => {
			assert.equal(s.isNew, false);
			assert.equal(s.get("ok"), 1);
			for (const key of FORBIDDEN) {
				assert.equal(s.get(key), undefined);
				assert.equal(s.has(key), false);
			}
			assert.throws(() => s.get("profile"), SessionCodecError, "a value that would pollute is refused, not decoded");
			assert.equal(s.flash("notice"), "hi");
			assert.equal(s.hasFlash(), false, "the hostile flash key is not readable");
			s.delete("profile");
			s.increment("ok");
			const all = s.all();
			assert.deepEqual(Object.keys(all), ["ok"]);
			assert.equal(Object.getPrototypeOf(all), Object.prototype);
		});
		assert.equal(first.setCookie, null, "an existing session keeps its cookie");
		const { session } = await request(sessions, `sid=${token}`);
		assert.deepEqual(session.all(), { ok: 2 }, "a merge over the hostile record kept it inert");
		assert.equal(({} as Data).isAdmin, undefined);
		assert.equal(Object.prototype.hasOwnProperty.call(Object.prototype, "isAdmin"), false);
	});

	it("defaultCodec decodes no structure that carries a prototype-polluting key", () => {
		const hostile = [
			'{"prototype":{"isAdmin":true}}',
			'{"a":{"b":{"c":{"__proto__":{"isAdmin":true}}}}}',
			'{"$t":"Set","v":[{"__proto__":{"isAdmin":true}}]}',
			'{"$t":"Map","v":[[{"constructor":{"prototype":{"isAdmin":true}}},1]]}',
			'[[[{"__proto__":{"isAdmin":true}}]]]',
			'{"$t":"Obj","v":{"$t":"x","nested":{"prototype":1}}}',
		];
		for (const text of hostile) assert.throws(() => defaultCodec.decode(text), SessionCodecError, text);
		const plain = defaultCodec.decode('{"a":{"b":[{"c":1}]},"proto":"__proto__"}') as { a: { b: Array<Data> } };
		assert.equal(Object.getPrototypeOf(plain.a), Object.prototype);
		assert.equal(Object.getPrototypeOf(plain.a.b[0]), Object.prototype);
		assert.equal(({} as Data).isAdmin, undefined);
		assert.equal(([] as unknown as Data).isAdmin, undefined);
	});
});

describe("maxSize", () => {
	it("a new session over maxSize fails the commit with SessionTooLargeError and writes nothing", async () => {
		const inner = memoryStore({ sweepInterval: 0 });
		const counted = countingStore(inner);
		const sessions = createSessions<Data>({ store: counted.store, maxSize: 256 });
		const session = await sessions.load(undefined);
		session.set("blob", "x".repeat(300));
		await assert.rejects(async () => sessions.commit(session, { secure: false }), (error: unknown) => {
			assert.ok(error instanceof SessionTooLargeError);
			assert.equal(error.code, "SESSION_TOO_LARGE");
			assert.equal(error.limit, 256);
			assert.ok(error.size > 256);
			return true;
		});
		assert.deepEqual(counted.calls, {}, "no store call at all");
		assert.equal(inner.size, 0);
	});

	it("an update over maxSize answers 500 with no cookie, and the stored session keeps its old value", async (t) => {
		const app = await serve(t, { maxSize: 256 });
		const token = (await app.fetch("/set?v=small")).session!.value;
		const key = sha256Hex(token);
		const before = structuredClone(app.inner.get(key));
		app.reset();
		const reply = await app.fetch("/big?n=300", { cookie: `sid=${token}` });
		assert.equal(reply.status, 500);
		assert.equal(reply.body, "Error: SESSION_TOO_LARGE");
		assert.deepEqual(reply.cookies, []);
		assert.ok(app.errors.at(-1) instanceof SessionTooLargeError);
		assert.deepEqual(app.calls, { get: 1 }, "the load, and no write");
		assert.deepEqual(app.inner.get(key), before, "the stored record is unchanged");
		assert.equal(app.inner.size, 1);
	});

	it("a renew over maxSize hands out no token and the old one keeps working", async (t) => {
		const app = await serve(t, { maxSize: 256 });
		const token = await login(app);
		const reply = await app.fetch("/big?n=300&renew", { cookie: `sid=${token}` });
		assert.equal(reply.status, 500);
		assert.deepEqual(reply.cookies, []);
		assert.equal(app.inner.size, 1, "no second record");
		assert.equal((await app.fetch("/whoami", { cookie: `sid=${token}` })).body, "alice");
	});

	it("counts UTF-8 bytes: a record of exactly maxSize bytes fits, one byte more is refused", async () => {
		const sessions = createSessions<Data>({ store: memoryStore({ sweepInterval: 0 }), maxSize: 256 });
		// "kk" (2 bytes) + the JSON string: 2 quotes + 126 × "é" (2 bytes each) = 256 bytes.
		const exact = await sessions.load(undefined);
		exact.set("kk", "é".repeat(126));
		assert.notEqual((await sessions.commit(exact, { secure: false })).setCookie, null);
		const over = await sessions.load(undefined);
		over.set("kk", `${"é".repeat(126)}a`);
		await assert.rejects(async () => sessions.commit(over, { secure: false }), (error: unknown) => error instanceof SessionTooLargeError && error.size === 257);
	});

	it("counts flash messages and key names toward the limit", async () => {
		const sessions = createSessions<Data>({ store: memoryStore({ sweepInterval: 0 }), maxSize: 256 });
		const flashed = await sessions.load(undefined);
		flashed.flash("notice", "y".repeat(250));
		await assert.rejects(async () => sessions.commit(flashed, { secure: false }), SessionTooLargeError);
		const longKey = await sessions.load(undefined);
		longKey.set("k".repeat(250), "12345678");
		await assert.rejects(async () => sessions.commit(longKey, { secure: false }), SessionTooLargeError);
	});
});

describe("cookie attributes", () => {
	it("a browser-session cookie carries neither Max-Age nor Expires; persist adds Max-Age", async (t) => {
		const plain = await serve(t);
		const cookie = (await plain.fetch("/set")).session!;
		assert.equal(cookie.attributes.has("max-age"), false);
		assert.equal(cookie.attributes.has("expires"), false);
		assert.equal(cookie.attributes.has("domain"), false);

		const persistent = await serve(t, { idleTimeout: 900, cookie: { persist: true } });
		const kept = (await persistent.fetch("/set")).session!;
		assert.equal(kept.attributes.get("max-age"), "900");
		assert.equal(kept.attributes.get("httponly"), true);
		assert.equal(kept.attributes.get("samesite"), "Lax");
	});

	it("the logout cookie has the same name, Path and flags, so the browser really drops the session cookie", async (t) => {
		const app = await serve(t, { cookie: { path: "/app", sameSite: "strict" } });
		const set = (await app.fetch("/set")).session!;
		const logout = (await app.fetch("/logout", { cookie: `sid=${set.value}` })).session!;
		assert.equal(logout.value, "");
		assert.equal(logout.attributes.get("max-age"), "0");
		for (const attribute of ["path", "samesite", "httponly"]) {
			assert.equal(logout.attributes.get(attribute), set.attributes.get(attribute), attribute);
		}
		assert.equal(logout.attributes.get("path"), "/app");
	});

	const hasOpenSSL = (() => {
		try {
			execFileSync("openssl", ["version"], { stdio: "ignore" });
			return true;
		} catch {
			return false;
		}
	})();

	it("is Secure over a real TLS connection with secure: \"auto\", and marked no-store", { skip: hasOpenSSL ? false : "openssl is not installed" }, async (t) => {
		const dir = mkdtempSync(join(tmpdir(), "sessionkit-tls-"));
		t.after(() => rmSync(dir, { recursive: true, force: true }));
		execFileSync("openssl", ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stdio: "ignore" });
		const cert = readFileSync(join(dir, "cert.pem"));
		const sessions = createSessions<Data>({ store: memoryStore({ sweepInterval: 0 }) });
		const server = createHttpsServer({ key: readFileSync(join(dir, "key.pem")), cert }, withSessions(sessions, routes) as RequestListener);
		await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
		t.after(async () => {
			server.closeAllConnections();
			await new Promise((resolve) => server.close(resolve));
			await sessions.close();
		});
		const { port } = server.address() as AddressInfo;
		const headers = await new Promise<Record<string, string | string[] | undefined>>((resolve, reject) => {
			const req = httpsRequest({ host: "127.0.0.1", port, path: "/set", ca: cert, agent: false }, (res) => {
				res.resume();
				res.on("end", () => resolve(res.headers));
			});
			req.on("error", reject);
			req.end();
		});
		const line = (headers["set-cookie"] ?? []) as string[];
		assert.equal(line.length, 1);
		assert.match(line[0]!, /^sid=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Lax$/);
		assert.equal(headers["cache-control"], "no-store");
		assert.equal(headers.vary, "Cookie");
	});

	it("a response that sets the session cookie stays no-store when the handler passes Cache-Control to writeHead", async (t) => {
		const app = await serve(t);
		const reply = await app.fetch("/writehead-cache");
		assert.ok(reply.session, "the session cookie is set");
		assert.equal(reply.headers.get("cache-control"), "no-store", "a shared cache must not keep a response that carries a session token");
	});

	it("keeps the session cookie when the handler passes its own Set-Cookie to writeHead", async (t) => {
		const app = await serve(t);
		const reply = await app.fetch("/writehead-cookie");
		assert.ok(reply.cookies.some((c) => c.name === "theme"), "the handler's cookie is sent");
		assert.ok(reply.session, "the new session's cookie is sent too, or the stored session is unreachable");
	});

	it("createSessions refuses names, paths and domains that could inject attributes, naming the option", () => {
		const injections = ["\r\nSet-Cookie: x=1", "\n", "\r", " ", "\t", ";", "; Domain=evil.example", "\u0000"];
		const cases: Array<[CookieOptionName, string]> = [];
		for (const bad of injections) {
			cases.push(["name", `sid${bad}`], ["path", `/app${bad}`], ["domain", `example.com${bad}`]);
		}
		// A comma is legal in a path (RFC 6265 path-value), not in a name or a domain.
		cases.push(["name", "sid,x"], ["domain", "example.com,evil.example"], ["name", "sid=x"], ["name", "s\u00e9ssion"], ["path", "/a b"], ["domain", "exa mple.com"], ["domain", "example.com/path"]);
		for (const [option, value] of cases) {
			refusesCookie({ [option]: value } as CookieOptions, `cookie.${option}`);
		}
	});

	it("createSessions refuses SameSite=None without Secure and __Host- names with a Domain or without Secure", () => {
		refusesCookie({ sameSite: "None" as "none" }, "cookie.sameSite");
		refusesCookie({ sameSite: "none", secure: false }, "cookie.sameSite");
		refusesCookie({ sameSite: "NONE" as "none", secure: "auto" }, "cookie.sameSite");
		refusesCookie({ name: "__Host-sid", domain: "example.com" }, "cookie.name");
		refusesCookie({ name: "__Host-sid", secure: "auto" }, "cookie.name");
		refusesCookie({ name: "__Host-sid", secure: false }, "cookie.name");
		refusesCookie({ name: "__Secure-sid", secure: "auto" }, "cookie.name");
		assert.doesNotThrow(() => createSessions({ cookie: { sameSite: "none", secure: true } }));
		assert.doesNotThrow(() => createSessions({ cookie: { name: "__Host-sid", secure: true } }));
	});
});

type CookieOptionName = "name" | "path" | "domain";

function refusesCookie(cookie: CookieOptions, option: string): void {
	assert.throws(
		() => createSessions({ cookie }),
		(error: unknown) => {
			assert.ok(error instanceof SessionConfigError, `${JSON.stringify(cookie)}: expected SessionConfigError, got ${String(error)}`);
			assert.equal(error.option, option, JSON.stringify(cookie));
			return true;
		},
		JSON.stringify(cookie),
	);
}

describe("expiry", () => {
	/** A manager over a memory store whose clock never moves: it keeps returning what the manager must refuse. */
	function lenient(options: { idleTimeout: number; absoluteTimeout: number }) {
		let now = Date.UTC(2026, 0, 1);
		const clock = Object.assign(() => now, { advanceMs: (ms: number) => void (now += ms) });
		const inner = memoryStore({ sweepInterval: 0, clock: testClock() });
		const events: SessionEvent[] = [];
		const sessions = createSessions<Data>({ ...options, touchAfter: 0, store: inner, clock, onEvent: (e) => events.push(e) });
		return { sessions, inner, clock, events };
	}

	async function created(sessions: SessionManager<Data>): Promise<{ cookie: string; key: string }> {
		const { setCookie, session } = await request(sessions, undefined, (s: Session<Data>) => s.set("secret", "s3cr3t"));
		return { cookie: cookieOf(setCookie), key: session.id! };
	}

	it("a session is refused from the very millisecond of its idle deadline", async () => {
		const { sessions, inner, clock, events } = lenient({ idleTimeout: 600, absoluteTimeout: 3600 });
		const { cookie, key } = await created(sessions);
		clock.advanceMs(599_999);
		// Loaded, not committed: a commit would touch the session and move the deadline.
		assert.equal((await sessions.load(cookie)).isNew, false, "1 ms before: alive");
		clock.advanceMs(1);
		const { session } = await request(sessions, cookie);
		assert.equal(session.isNew, true);
		assert.equal(session.get("secret"), undefined);
		assert.deepEqual(events.at(-1), { type: "session-expired", id: key, reason: "idle" });
		assert.equal(inner.get(key), null, "and deleted from the store");
	});

	it("a session is refused at its absolute deadline even if the stored idle deadline is later", async () => {
		const { sessions, inner, clock, events } = lenient({ idleTimeout: 600, absoluteTimeout: 3600 });
		const token = "Record0With0Idle0Deadline0Past0Absolute0aaa";
		const key = sha256Hex(token);
		const now = clock();
		inner.set(key, { data: { secret: '"s3cr3t"' }, flash: {}, createdAt: now - 3_600_000, idleExpiresAt: now + 600_000, absoluteExpiresAt: now, subject: null }, now + 600_000);
		const { session } = await request(sessions, `sid=${token}`);
		assert.equal(session.isNew, true);
		assert.equal(session.get("secret"), undefined);
		assert.deepEqual(events.at(-1), { type: "session-expired", id: key, reason: "absolute" });
		assert.equal(inner.get(key), null);
	});

	it("end to end: an expired session is not served, and a write after it starts a fresh token", async (t) => {
		const app = await serve(t, { idleTimeout: 600, absoluteTimeout: 3600, touchAfter: 0 });
		const token = await login(app);
		for (let i = 0; i < 6; i++) {
			app.clock.advance(500);
			assert.equal((await app.fetch("/whoami", { cookie: `sid=${token}` })).body, "alice", `in use after ${(i + 1) * 500} s`);
		}
		app.clock.advance(600);
		assert.equal((await app.fetch("/whoami", { cookie: `sid=${token}` })).body, "anonymous", "past the absolute lifetime");
		assert.equal(app.inner.get(sha256Hex(token)), null, "the expired record was deleted");
		const write = await app.fetch("/set?v=after", { cookie: `sid=${token}` });
		assert.ok(write.session);
		assert.notEqual(write.session.value, token, "the expired token is not brought back");
		assert.equal(app.inner.get(sha256Hex(token)), null);
	});
});
