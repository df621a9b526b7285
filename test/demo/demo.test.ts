/**
 * The `npm start` demo (examples/demo): the app in process on SQLite, the store choice, and the
 * real server as a child process. Real HTTP with fetch and a cookie jar throughout.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import type { TestContext } from "node:test";
import { createSessions, SessionStoreError } from "sessionkit";
import type { AnyStore } from "sessionkit";
import { sqliteStore } from "sessionkit/stores/sqlite";
import { createDemoApp, escapeHtml } from "../../examples/demo/app.js";
import type { DemoData, DemoOptions } from "../../examples/demo/app.js";
import { DemoConfigError, openStore, STORE_NAMES } from "../../examples/demo/stores.js";
import { listen } from "../adapter-conformance.js";
import { CookieJar, setCookiesOf } from "../helpers/cookie-jar.js";
import type { SetCookie } from "../helpers/cookie-jar.js";
import { requireService } from "../services.js";
import type { ServiceName } from "../services.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const ROUTES = ["/login", "/logout", "/secret", "/set", "/get", "/clear", "/flash/set", "/flash/get"];
const TOKEN = /^[A-Za-z0-9_-]{43}$/;

interface Reply {
	status: number;
	body: string;
	headers: Headers;
	/** The `sid` Set-Cookie line, if any. */
	sid: SetCookie | undefined;
}

/** fetch with a cookie jar; `headers.cookie` replaces the jar for one request. */
class Client {
	constructor(
		readonly url: string,
		readonly jar = new CookieJar(),
	) {}

	async request(path: string, init: RequestInit = {}): Promise<Reply> {
		const headers = new Headers(init.headers);
		const cookie = this.jar.header();
		if (cookie !== undefined && !headers.has("cookie")) headers.set("cookie", cookie);
		const response = await fetch(this.url + path, { ...init, headers, redirect: "manual" });
		const body = await response.text();
		this.jar.update(response);
		return { status: response.status, body, headers: response.headers, sid: setCookiesOf(response).find((c) => c.name === "sid") };
	}

	/** Asserts status, body and a text/plain type. */
	async expect(path: string, status: number, body: string, init?: RequestInit): Promise<Reply> {
		const reply = await this.request(path, init);
		assert.equal(reply.status, status, `${init?.method ?? "GET"} ${path}`);
		assert.equal(reply.body, body, `${init?.method ?? "GET"} ${path}`);
		assert.equal(reply.headers.get("content-type"), "text/plain; charset=utf-8", path);
		return reply;
	}
}

interface Demo {
	url: string;
	close(): Promise<void>;
}

/** The demo app on port 0 with `store` (closed with the app); closed after the test anyway. */
async function startDemo(t: TestContext, store: AnyStore | undefined, options: DemoOptions = { logErrors: false }): Promise<Demo> {
	const sessions = createSessions<DemoData>({ store });
	const server = await listen(createServer(createDemoApp(sessions, options)));
	let closing: Promise<void> | undefined;
	const close = () => (closing ??= server.close().then(() => sessions.close()));
	t.after(close);
	return { url: server.url, close };
}

async function tempDir(t: TestContext): Promise<string> {
	const dir = await mkdtemp(join(tmpdir(), "sessionkit-demo-"));
	t.after(() => rm(dir, { recursive: true, force: true }));
	return dir;
}

describe("demo app on SQLite", () => {
	let dir: string;
	let url: string;
	let closeDemo: () => Promise<void>;

	before(async () => {
		dir = await mkdtemp(join(tmpdir(), "sessionkit-demo-"));
		const sessions = createSessions<DemoData>({ store: sqliteStore({ path: join(dir, "sessions.db") }) });
		const server = await listen(createServer(createDemoApp(sessions, { logErrors: false })));
		url = server.url;
		closeDemo = () => server.close().then(() => sessions.close());
	});
	after(async () => {
		await closeDemo();
		await rm(dir, { recursive: true, force: true });
	});

	it("answers every route with its exact status and body", async () => {
		const client = new Client(url);
		const steps: Array<[string, number, string]> = [
			["/get", 200, "Not authenticated"],
			["/secret", 403, "Forbidden"],
			["/set", 200, "Succeed"],
			["/get", 200, "Authenticated as 123"],
			["/clear", 200, "Cleared"],
			["/get", 200, "Not authenticated"],
			["/flash/get", 200, "No flash message"],
			["/flash/set", 200, "Succeed"],
			["/flash/get", 200, "This is a flash message"],
			["/flash/get", 200, "No flash message"],
			["/login", 200, "Logged in"],
			["/secret", 200, "The cake is a lie!"],
			["/logout", 200, "Logged out"],
			["/secret", 403, "Forbidden"],
		];
		for (const [path, status, body] of steps) await client.expect(path, status, body);
	});

	it("/clear deletes user_id only", async () => {
		const client = new Client(url);
		await client.expect("/login", 200, "Logged in");
		await client.expect("/set", 200, "Succeed");
		await client.expect("/clear", 200, "Cleared");
		await client.expect("/get", 200, "Not authenticated");
		await client.expect("/secret", 200, "The cake is a lie!");
	});

	it("login renews the token: the old cookie is no longer authenticated", async () => {
		const client = new Client(url);
		await client.expect("/set", 200, "Succeed");
		const original = client.jar.get("sid");
		assert.match(original ?? "", TOKEN);
		const login = await client.expect("/login", 200, "Logged in");
		const renewed = client.jar.get("sid");
		assert.equal(login.sid?.value, renewed);
		assert.notEqual(renewed, original);

		await client.expect("/secret", 200, "The cake is a lie!");
		await client.expect("/get", 200, "Authenticated as 123"); // the data moved with the session
		const old = { headers: { cookie: `sid=${original}` } };
		await client.expect("/secret", 403, "Forbidden", old);
		await client.expect("/get", 200, "Not authenticated", old);
	});

	it("/login?remember=1 makes the cookie outlive the browser; a plain /login does not", async () => {
		const plain = await new Client(url).expect("/login", 200, "Logged in");
		assert.equal(plain.sid?.attributes.get("max-age"), undefined);
		const client = new Client(url);
		const remembered = await client.expect("/login?remember=1", 200, "Logged in");
		assert.match(String(remembered.sid?.attributes.get("max-age")), /^[1-9]\d*$/);
		await client.expect("/secret", 200, "The cake is a lie!");
	});

	it("logout ends the session: /secret is 403, with the old cookie too", async () => {
		const client = new Client(url);
		await client.expect("/login", 200, "Logged in");
		const token = client.jar.get("sid");
		const logout = await client.expect("/logout", 200, "Logged out");
		assert.equal(logout.sid?.value, "", "the cookie is expired");
		assert.equal(client.jar.get("sid"), undefined);
		await client.expect("/secret", 403, "Forbidden");
		await client.expect("/secret", 403, "Forbidden", { headers: { cookie: `sid=${token}` } });
	});

	it("/ counts visits, shows the flash message once and links to every route", async () => {
		const client = new Client(url);
		const page = async () => {
			const reply = await client.request("/");
			assert.equal(reply.status, 200);
			assert.equal(reply.headers.get("content-type"), "text/html; charset=utf-8");
			return reply.body;
		};
		const first = await page();
		assert.match(first, /Visits: 1</);
		for (const route of ROUTES) assert.ok(first.includes(`<a href="${route}">`), route);
		assert.match(await page(), /Visits: 2</);

		await client.expect("/flash/set", 200, "Succeed");
		const flashed = await page();
		assert.match(flashed, /Visits: 3</);
		assert.ok(flashed.includes(`<p class="flash">${escapeHtml("This is a flash message")}</p>`));
		const later = await page();
		assert.match(later, /Visits: 4</);
		assert.ok(!later.includes("This is a flash message"));
		await client.expect("/flash/get", 200, "No flash message");
	});

	it("escapeHtml escapes every character that could open markup", () => {
		assert.equal(escapeHtml(`<script>alert("x" & 'y')</script>`), "&#60;script&#62;alert(&#34;x&#34; &#38; &#39;y&#39;)&#60;/script&#62;");
		assert.equal(escapeHtml("This is a flash message"), "This is a flash message");
	});

	it("404 for an unknown path, 405 with Allow for any other method on a known route", async () => {
		const client = new Client(url);
		for (const path of ["/nope", "/login/extra", "/flash"]) await client.expect(path, 404, "Not Found");
		await client.expect("/nope", 404, "Not Found", { method: "POST" });
		for (const path of ["/", ...ROUTES]) {
			for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"]) {
				const reply = await client.expect(path, 405, "Method Not Allowed", { method });
				assert.equal(reply.headers.get("allow"), "GET, HEAD", `${method} ${path}`);
				assert.equal(reply.sid, undefined, "a refused request never touches the session");
			}
		}
		await client.expect("/secret", 403, "Forbidden"); // POST /login did not log in
		const head = await client.request("/get", { method: "HEAD" });
		assert.equal(head.status, 200);
		assert.equal(head.body, "");
	});

	it("hostile cookies get a normal answer and a new session, never a 500", async () => {
		const owner = new Client(url);
		await owner.expect("/set", 200, "Succeed");
		const token = owner.jar.get("sid")!;
		const hostile = [
			"sid=garbage",
			"sid=%E0%A4%A; x=%%%",
			`sid=${token.slice(0, 20)}`,
			`sid=${token}x`,
			`sid=${token}; sid=${token}`,
			`sid=${token}; sid=other`,
			`sid=${"A".repeat(10 * 1024)}`,
			`big=${"x".repeat(10 * 1024)}; sid=garbage`,
			"__proto__=x; sid=__proto__",
			'sid=__proto__; constructor={"a":1}; __proto__[polluted]=1',
			"sid=",
			";;; = ; sid",
		];
		for (const cookie of hostile) {
			const client = new Client(url);
			const init = { headers: { cookie } };
			const get = await client.expect("/get", 200, "Not authenticated", init);
			assert.equal(get.sid, undefined, cookie.slice(0, 60));
			await client.expect("/secret", 403, "Forbidden", init);
			const set = await client.expect("/set", 200, "Succeed", init);
			assert.match(set.sid?.value ?? "", TOKEN, cookie.slice(0, 60));
			assert.notEqual(set.sid?.value, token);
			await client.expect("/get", 200, "Authenticated as 123");
		}
		assert.equal(({} as Record<string, unknown>).polluted, undefined);
		await owner.expect("/get", 200, "Authenticated as 123"); // the real session is untouched
	});

	it("a request that does not change the session sets no cookie", async () => {
		const client = new Client(url);
		for (const path of ["/get", "/secret", "/flash/get", "/clear", "/nope"]) {
			const reply = await client.request(path);
			assert.equal(reply.headers.get("set-cookie"), null, path);
			assert.equal(reply.headers.get("cache-control"), null, path);
		}
		await client.expect("/set", 200, "Succeed");
		const reply = await client.expect("/get", 200, "Authenticated as 123");
		assert.equal(reply.headers.get("set-cookie"), null);
	});

	it("the session cookie is HttpOnly, SameSite=Lax, Path=/, sent with Cache-Control: no-store", async () => {
		for (const path of ["/set", "/login", "/flash/set", "/"]) {
			const reply = await new Client(url).request(path);
			const sid = reply.sid;
			assert.ok(sid, path);
			assert.match(sid.value, TOKEN);
			assert.equal(sid.attributes.get("httponly"), true, path);
			assert.equal(String(sid.attributes.get("samesite")).toLowerCase(), "lax", path);
			assert.equal(sid.attributes.get("path"), "/", path);
			assert.equal(sid.attributes.has("secure"), false, "plain HTTP");
			assert.equal(reply.headers.get("cache-control"), "no-store", path);
			assert.match(reply.headers.get("vary") ?? "", /\bCookie\b/i, path);
		}
	});
});

describe("demo app, restarts and failures", () => {
	it("sessions survive a restart on the same SQLite file", async (t) => {
		const path = join(await tempDir(t), "sessions.db");
		const first = await startDemo(t, sqliteStore({ path }));
		const client = new Client(first.url);
		await client.expect("/login", 200, "Logged in");
		await client.expect("/set", 200, "Succeed");
		await first.close();

		const second = await startDemo(t, sqliteStore({ path }));
		const again = new Client(second.url, client.jar);
		await again.expect("/secret", 200, "The cake is a lie!");
		await again.expect("/get", 200, "Authenticated as 123");
	});

	it("a store failure is a plain 500 without details, logged unless logErrors is false", async (t) => {
		const dir = await tempDir(t);
		const logged = t.mock.method(console, "error", () => undefined);
		// A directory cannot be opened as a database: every store call fails.
		const demo = await startDemo(t, sqliteStore({ path: dir }), {});
		const client = new Client(demo.url);
		const withCookie = { headers: { cookie: `sid=${"A".repeat(43)}` } };
		for (const [path, init] of [["/get", withCookie], ["/nope", withCookie], ["/set", {}]] as const) {
			const reply = await client.expect(path, 500, "Internal Server Error", init);
			assert.equal(reply.sid, undefined, path);
		}
		assert.equal(logged.mock.callCount(), 3);
		assert.ok(logged.mock.calls.every((call) => call.arguments[0] instanceof SessionStoreError));

		const quiet = await startDemo(t, sqliteStore({ path: dir }), { logErrors: false });
		await new Client(quiet.url).expect("/set", 500, "Internal Server Error");
		assert.equal(logged.mock.callCount(), 3);
	});
});

/** /set, /login, /secret, /logout, /secret against `store`: the store works behind the demo. */
async function roundTrip(t: TestContext, store: AnyStore | undefined): Promise<void> {
	const demo = await startDemo(t, store);
	const client = new Client(demo.url);
	await client.expect("/set", 200, "Succeed");
	await client.expect("/login", 200, "Logged in");
	await client.expect("/get", 200, "Authenticated as 123");
	await client.expect("/secret", 200, "The cake is a lie!");
	await client.expect("/logout", 200, "Logged out");
	await client.expect("/secret", 403, "Forbidden");
	await demo.close();
}

describe("openStore", () => {
	it("defaults to SQLite, creating the file's folder", async (t) => {
		const path = join(await tempDir(t), "nested", "deeper", "sessions.db");
		const { name, store } = await openStore({ SESSION_SQLITE_PATH: path });
		assert.equal(name, "sqlite");
		await roundTrip(t, store);
		assert.ok(existsSync(path));
	});

	it("memory: no store, so createSessions uses (and in production refuses) its own", async (t) => {
		const opened = await openStore({ SESSION_STORE: "memory" });
		assert.deepEqual(opened, { name: "memory", store: undefined });
		await roundTrip(t, opened.store);
	});

	it("file: sessions in SESSION_FILE_DIR", async (t) => {
		const dir = join(await tempDir(t), "sessions");
		const { name, store } = await openStore({ SESSION_STORE: "file", SESSION_FILE_DIR: dir });
		assert.equal(name, "file");
		await roundTrip(t, store);
		assert.ok(existsSync(dir));
	});

	it("cookie: needs SESSION_SECRET of at least 32 characters", async (t) => {
		await assert.rejects(openStore({ SESSION_STORE: "cookie" }), (error: unknown) => error instanceof DemoConfigError && /SESSION_SECRET.*not set/.test(error.message));
		await assert.rejects(openStore({ SESSION_STORE: "cookie", SESSION_SECRET: "x".repeat(31) }), (error: unknown) => error instanceof DemoConfigError && /got 31/.test(error.message));
		const { store } = await openStore({ SESSION_STORE: "cookie", SESSION_SECRET: "s".repeat(32) });
		const demo = await startDemo(t, store);
		const client = new Client(demo.url);
		await client.expect("/login", 200, "Logged in");
		await client.expect("/secret", 200, "The cake is a lie!");
	});

	it("mongodb: needs MONGODB_URL", async () => {
		await assert.rejects(openStore({ SESSION_STORE: "mongodb" }), (error: unknown) => error instanceof DemoConfigError && /MONGODB_URL/.test(error.message));
	});

	it("an unknown name lists the valid ones", async () => {
		await assert.rejects(openStore({ SESSION_STORE: "oracle" }), (error: unknown) => {
			assert.ok(error instanceof DemoConfigError);
			assert.match(error.message, /"oracle"/);
			for (const name of STORE_NAMES) assert.ok(error.message.includes(name), name);
			return true;
		});
		assert.deepEqual(STORE_NAMES, ["sqlite", "memory", "file", "postgres", "mysql", "redis", "memcached", "mongodb", "cookie"]);
	});

	for (const name of ["postgres", "mysql", "redis", "memcached", "mongodb"] as const satisfies readonly ServiceName[]) {
		it(`${name}: the default URL works behind the demo`, async (t) => {
			const skip = await requireService(name);
			if (skip) return t.skip(skip);
			const { store } = await openStore({ ...process.env, SESSION_STORE: name });
			await roundTrip(t, store);
		});
	}
});

interface Child {
	url: string;
	stop(signal: NodeJS.Signals): Promise<{ code: number | null; stderr: string }>;
}

/** Runs `npm start`'s command with `env`; resolves once it printed its URL. */
function runServer(t: TestContext, env: Record<string, string>): Promise<Child> {
	const childEnv: NodeJS.ProcessEnv = { ...process.env, PORT: "0", SESSION_STORE: "", ...env };
	delete childEnv.NODE_TEST_CONTEXT; // the child is a server, not a test file
	const child = spawn(process.execPath, ["--conditions=sessionkit-source", "--import", "tsx", "examples/demo/server.ts"], { cwd: ROOT, env: childEnv });
	let stdout = "";
	let stderr = "";
	child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
	child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
	const exited = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once("close", (code) => resolve({ code, stderr })));
	t.after(() => {
		if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
	});
	return new Promise((resolve, reject) => {
		const timer = setTimeout(() => reject(new Error(`no URL after 20 s; stderr: ${stderr}`)), 20_000);
		child.stdout.on("data", () => {
			const match = /^sessionkit demo on (http:\/\/127\.0\.0\.1:(\d+)) \(store: (\w+)\)$/m.exec(stdout);
			if (!match) return;
			clearTimeout(timer);
			assert.notEqual(match[2], "0");
			resolve({ url: match[1]!, stop: (signal) => (child.kill(signal), exited) });
		});
		void exited.then(({ code }) => {
			clearTimeout(timer);
			reject(Object.assign(new Error(`the server exited (${code}) before printing its URL`), { code, stderr }));
		});
	});
}

/** The exit code and stderr of a server that must not start. */
async function failedStart(t: TestContext, env: Record<string, string>): Promise<{ code: unknown; stderr: string }> {
	try {
		await runServer(t, env);
	} catch (error) {
		return error as { code: unknown; stderr: string };
	}
	assert.fail("the server started");
}

describe("npm start (examples/demo/server.ts)", () => {
	it("serves on the printed port, exits 0 on SIGTERM and SIGINT, and keeps sessions across the restart", async (t) => {
		const path = join(await tempDir(t), "data", "sessions.db");
		const first = await runServer(t, { SESSION_SQLITE_PATH: path });
		const client = new Client(first.url);
		await client.expect("/login", 200, "Logged in");
		await client.expect("/secret", 200, "The cake is a lie!");
		assert.deepEqual(await first.stop("SIGTERM"), { code: 0, stderr: "" });

		const second = await runServer(t, { SESSION_SQLITE_PATH: path });
		await new Client(second.url, client.jar).expect("/secret", 200, "The cake is a lie!");
		assert.deepEqual(await second.stop("SIGINT"), { code: 0, stderr: "" });
	});

	it("refuses the memory store in production with sessionkit's own message", async (t) => {
		const { code, stderr } = await failedStart(t, { SESSION_STORE: "memory", NODE_ENV: "production" });
		assert.equal(code, 1);
		assert.match(stderr, /option "store" is required in production/);
		assert.doesNotMatch(stderr, /\n\s+at /, "a message, not a stack trace");
	});

	it("names the valid stores when SESSION_STORE is unknown", async (t) => {
		const { code, stderr } = await failedStart(t, { SESSION_STORE: "oracle" });
		assert.equal(code, 1);
		assert.match(stderr, /Valid: sqlite, memory, file, postgres, mysql, redis, memcached, mongodb, cookie\./);
	});
});
